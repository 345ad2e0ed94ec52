"""Image tags and OCI labels from the git state of the working tree (for images.build/push).

Tags: `<git short sha>` always; `vX.Y.Z` as well when HEAD is exactly at a semver tag. A
dirty working tree (changed, staged or untracked files) appends `-dirty` to every tag, and
such an image is never pushable to prod; prod only ever receives clean semver tags.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from invoke import Exit

SEMVER_TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
DIRTY = "-dirty"
DEFAULT_SOURCE = "https://github.com/desbordante/desbordante-ops"


@dataclass(frozen=True)
class Revision:
    """What the working tree is: commit, exact semver tag (if any) and dirtiness."""

    sha: str
    short_sha: str
    semver: str | None
    dirty: bool

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


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise Exit(
            "git is not installed; image tags come from git (apt-get install git)."
        ) from None
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise Exit(f"git {' '.join(args)} failed in {repo}: {message[0]}")
    return result.stdout


def revision(repo: Path) -> Revision:
    """The Revision of the git working tree at REPO."""
    sha = _git(repo, "rev-parse", "--verify", "HEAD").strip()
    short_sha = _git(repo, "rev-parse", "--short", "HEAD").strip()
    at_head = _git(repo, "tag", "--points-at", "HEAD").split()
    semvers = sorted(
        (tag for tag in at_head if SEMVER_TAG.match(tag)),
        key=lambda tag: tuple(int(part) for part in tag[1:].split(".")),
    )
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=normal").strip())
    return Revision(
        sha=sha, short_sha=short_sha, semver=semvers[-1] if semvers else None, dirty=dirty
    )


def is_prod_pushable(tag: str) -> bool:
    """True only for a clean semver tag (what prod may receive)."""
    return bool(SEMVER_TAG.match(tag))


def labels(
    rev: Revision, source: str = DEFAULT_SOURCE, now: datetime | None = None
) -> dict[str, str]:
    """Build arguments that fill the image's OCI labels."""
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"SOURCE": source, "REVISION": rev.sha, "VERSION": rev.version, "CREATED": created}
