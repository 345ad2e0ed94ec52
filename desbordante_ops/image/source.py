"""The git remote images are built from: a branch's head, its release tags, a commit's files.

Auto-update asks the remote (`git ls-remote`), not the working tree, which commit a branch is
at; CI tags that commit's image `<short sha>` (`git log --format=%h`: 7 hex digits, more when
the repository is large or a prefix is ambiguous), so SHORT_SHA_LENGTHS are the tags to look
for. The commit's own `k8s/` and `env/` are exported with `git archive` from a bare mirror that
belongs to auto-update (root-only, under its state directory): the checkout a person works in
is only read (its remote's URL), never written by root.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from invoke import Context, Exit

from desbordante_ops.image.tags import git, is_release_tag, semver_key

SHORT_SHA_LENGTHS = range(7, 13)
FETCH_REFS = "refs/desbordante-autoupdate"
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}(?<![./])$")
SHA = re.compile(r"^[0-9a-f]{40}$")
EXPORTED = ("k8s", "env")


@dataclass(frozen=True)
class Head:
    """The commit BRANCH is at on the remote, and the release tags vX.Y.Z at that commit."""

    branch: str
    sha: str
    release_tags: tuple[str, ...] = ()  # newest first

    @property
    def short(self) -> str:
        return self.sha[: SHORT_SHA_LENGTHS[0]]


def check_branch(branch: str) -> str:
    """BRANCH if it can name a git branch; Exit otherwise."""
    if not BRANCH.match(branch):
        raise Exit(f"--branch {branch!r} is not a branch name (e.g. main).")
    return branch


def parse_ls_remote(output: str, branch: str) -> Head | None:
    """The Head of BRANCH in `git ls-remote` OUTPUT (annotated tags peeled); None if absent."""
    refs: dict[str, str] = {}
    for line in output.splitlines():
        target, _, ref = line.partition("\t")
        if SHA.match(target) and ref:
            refs[ref] = target
    sha = refs.get(f"refs/heads/{branch}")
    if sha is None:
        return None
    tags = {
        ref.removeprefix("refs/tags/"): refs.get(f"{ref}^{{}}", target)
        for ref, target in refs.items()
        if ref.startswith("refs/tags/") and not ref.endswith("^{}")
    }
    at_head = [name for name, target in tags.items() if target == sha and is_release_tag(name)]
    return Head(branch, sha, tuple(sorted(at_head, key=semver_key, reverse=True)))


def remote_url(c: Context, checkout: Path, remote: str) -> str:
    """REMOTE itself when it is a URL or a path, else the URL of that remote of CHECKOUT (read
    as root in a checkout another user owns: git's safe.directory for this one command)."""
    if "/" in remote or ":" in remote:
        return remote
    url = git(c, checkout, "-c", f"safe.directory={checkout}", "remote", "get-url", remote)
    return url.strip()


def ensure_mirror(c: Context, path: Path) -> Path:
    """The bare repository at PATH (created, 0700, when missing)."""
    if not (path / "HEAD").is_file():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        git(c, path, "init", "--quiet", "--bare")
    return path


def branch_head(c: Context, repo: Path, remote: str, branch: str) -> Head:
    """Where BRANCH is on REMOTE (a remote name of REPO or a URL), with its release tags."""
    output = git(c, repo, "ls-remote", remote, f"refs/heads/{branch}", "refs/tags/v*")
    head = parse_ls_remote(output, branch)
    if head is None:
        raise Exit(f"{remote} has no branch {branch}; pass the branch CI publishes (--branch).")
    return head


def short_shas(sha: str) -> list[str]:
    """The image tags CI may have given commit SHA (`git log --format=%h`), shortest first."""
    return [sha[:length] for length in SHORT_SHA_LENGTHS]


def fetch_branch(c: Context, repo: Path, remote: str, branch: str) -> None:
    """Fetch BRANCH of REMOTE into REPO (the mirror) under FETCH_REFS."""
    refspec = f"+refs/heads/{branch}:{FETCH_REFS}/{branch}"
    git(c, repo, "fetch", "--quiet", "--no-tags", remote, refspec)


def export(c: Context, repo: Path, sha: str, dest: Path) -> Path:
    """The EXPORTED directories of commit SHA written under DEST (which is returned)."""
    if not SHA.match(sha):
        raise Exit(f"{sha!r} is not a full commit id.")
    with tempfile.TemporaryDirectory(prefix="desbordante-archive-") as tmp:
        archive = Path(tmp) / "tree.tar"
        git(c, repo, "archive", "--format=tar", "-o", str(archive), sha, *EXPORTED)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest
