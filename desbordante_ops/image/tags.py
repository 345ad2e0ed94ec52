"""Image tags and OCI labels from the git state of the working tree (for images.build/push).

Tags: `<git short sha>` always; `vX.Y.Z` as well when HEAD is exactly at a semver tag. A
dirty working tree (changed, staged or untracked files) appends `-dirty` to every tag, and
such an image is never pushable to prod; prod only ever receives clean semver tags. The
`created` label is the commit's time, so building the same commit twice gives the same image.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from invoke import Context, Exit

from desbordante_ops.core.shell import run

SEMVER_TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
DIRTY = "-dirty"
DEFAULT_SOURCE = "https://github.com/desbordante/desbordante-ops"


@dataclass(frozen=True)
class Revision:
    """What the working tree is: commit, its time, exact semver tag (if any) and dirtiness."""

    sha: str
    short_sha: str
    semver: str | None
    dirty: bool
    committed: str = ""  # commit time, RFC 3339 UTC

    @property
    def tags(self) -> list[str]:
        """Image tags for this revision, most specific (release) first."""
        suffix = DIRTY if self.dirty else ""
        plain = [self.semver] if self.semver else []
        return [f"{tag}{suffix}" for tag in [*plain, self.short_sha]]

    @property
    def version(self) -> str:
        """The OCI version label: X.Y.Z at a release tag, else the short sha."""
        base = self.semver[1:] if self.semver else self.short_sha
        return f"{base}{DIRTY}" if self.dirty else base


def git(c: Context, repo: Path, *args: str) -> str:
    """Output of `git -C REPO ARGS`; one clear Exit when git fails or is missing."""
    result = run(
        c,
        shlex.join(["git", "-C", str(repo), *args]),
        f"git {' '.join(args)} in {repo}",
        missing="git is not installed; image tags come from git (apt-get install git).",
    )
    return str(result.stdout)


def semver_key(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag[1:].split("."))


def revision(c: Context, repo: Path) -> Revision:
    """The Revision of the git working tree at REPO."""
    sha, short_sha, committed = git(c, repo, "log", "-1", "--format=%H %h %ct").split()
    at_head = git(c, repo, "tag", "--points-at", "HEAD").split()
    semvers = sorted((tag for tag in at_head if SEMVER_TAG.match(tag)), key=semver_key)
    dirty = bool(git(c, repo, "status", "--porcelain", "--untracked-files=normal").strip())
    return Revision(
        sha=sha,
        short_sha=short_sha,
        semver=semvers[-1] if semvers else None,
        dirty=dirty,
        committed=_utc(int(committed)),
    )


def default_tag(c: Context, repo: Path) -> str:
    """The image tag of the working tree: its release tag if HEAD has one, else the short sha."""
    return revision(c, repo).tags[0]


def _utc(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_release_tag(tag: str) -> bool:
    """True only for a clean semver tag vX.Y.Z (what prod may receive)."""
    return bool(SEMVER_TAG.match(tag))


def labels(rev: Revision, source: str = DEFAULT_SOURCE) -> dict[str, str]:
    """Build arguments that fill the image's OCI labels (reproducible: the commit's time)."""
    return {"SOURCE": source, "REVISION": rev.sha, "VERSION": rev.version, "CREATED": rev.committed}


def publish_tags(rev: Revision, ref: str) -> tuple[str, list[str]]:
    """(environment, tags) that CI publishes for the git REF being built, e.g. refs/heads/main.

    main publishes `<short sha>` for stage; a tag publishes itself for prod, and only when it is
    a plain release tag vX.Y.Z at this very commit. Anything else is one clear Exit, before any
    build or push starts.
    """
    kind, _, name = ref.removeprefix("refs/").partition("/")
    if rev.dirty:
        raise Exit("The working tree is dirty; CI publishes clean commits only.")
    if kind == "heads" and name == "main":
        return "stage", [rev.short_sha]
    if kind == "tags":
        if not is_release_tag(name):
            raise Exit(
                f"Tag {name!r} is not a plain release tag vX.Y.Z (pre-releases such as "
                "v1.2.3-rc.1 are not published); nothing was built or pushed. Delete it with "
                f"`git push --delete origin {name}` and tag vX.Y.Z."
            )
        if rev.semver != name:
            raise Exit(f"Tag {name} does not point at the commit being built ({rev.short_sha}).")
        return "prod", [name]
    raise Exit(f"{ref}: only main and vX.Y.Z tags publish images; nothing to publish.")
