"""Image tags from git state (clean sha, release tag, dirty tree) in a real temporary repo."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from invoke import Context, Exit

from desbordante_ops.image import tags as imagetags
from desbordante_ops.image.push import check_pushable
from desbordante_ops.image.refs import image_refs, in_registry, split_ref


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "ci@example.invalid")
    git(tmp_path, "config", "user.name", "CI")
    (tmp_path / "app.txt").write_text("one\n")
    git(tmp_path, "add", "app.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_clean_commit_is_tagged_with_short_sha(repo: Path) -> None:
    rev = imagetags.revision(Context(), repo)
    assert rev.sha == git(repo, "rev-parse", "HEAD")
    assert rev.short_sha == git(repo, "rev-parse", "--short", "HEAD")
    assert rev.tags == [rev.short_sha]
    assert rev.semver is None and not rev.dirty
    assert rev.version == rev.short_sha


def test_semver_tag_at_head_adds_release_tag(repo: Path) -> None:
    git(repo, "tag", "v1.2.3")
    git(repo, "tag", "nightly")  # not semver: ignored
    rev = imagetags.revision(Context(), repo)
    assert rev.tags == ["v1.2.3", rev.short_sha]
    assert rev.version == "1.2.3"


def test_highest_of_several_semver_tags_wins(repo: Path) -> None:
    git(repo, "tag", "v1.10.0")
    git(repo, "tag", "v1.9.0")
    assert imagetags.revision(Context(), repo).semver == "v1.10.0"


def test_semver_tag_on_an_older_commit_does_not_count(repo: Path) -> None:
    git(repo, "tag", "v1.0.0")
    (repo / "app.txt").write_text("two\n")
    git(repo, "commit", "-q", "-am", "second")
    rev = imagetags.revision(Context(), repo)
    assert rev.semver is None
    assert rev.tags == [rev.short_sha]


def test_modified_file_makes_every_tag_dirty(repo: Path) -> None:
    git(repo, "tag", "v2.0.0")
    (repo / "app.txt").write_text("changed\n")
    rev = imagetags.revision(Context(), repo)
    assert rev.dirty
    assert rev.tags == ["v2.0.0-dirty", f"{rev.short_sha}-dirty"]
    assert rev.version == "2.0.0-dirty"


def test_untracked_file_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "new.txt").write_text("x\n")
    assert imagetags.revision(Context(), repo).dirty


def test_not_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exit, match="git log"):
        imagetags.revision(Context(), tmp_path / "nowhere")


def test_labels_carry_revision_version_and_the_commit_time(repo: Path) -> None:
    rev = imagetags.revision(Context(), repo)
    labels = imagetags.labels(rev, source="https://example.invalid/x")
    committed = datetime.fromtimestamp(int(git(repo, "log", "-1", "--format=%ct")), UTC)
    assert labels == {
        "SOURCE": "https://example.invalid/x",
        "REVISION": rev.sha,
        "VERSION": rev.short_sha,
        "CREATED": committed.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    # Building the same commit again gives the same labels (so the same image id).
    assert (
        imagetags.labels(imagetags.revision(Context(), repo), "https://example.invalid/x") == labels
    )


@pytest.mark.parametrize(
    ("tag", "pushable"),
    [
        ("v1.2.3", True),
        ("v1.2.3-dirty", False),
        ("abc1234", False),
        ("v1.2", False),
        ("1.2.3", False),
    ],
)
def test_only_clean_semver_is_pushable_to_prod(tag: str, pushable: bool) -> None:
    assert imagetags.is_release_tag(tag) is pushable


def test_prod_push_refuses_sha_and_dirty_tags() -> None:
    check_pushable(["ghcr.io/o/n:v1.0.0"], "prod")
    check_pushable(["ghcr.io/o/n:abc1234-dirty"], "stage")
    for ref in ("ghcr.io/o/n:abc1234", "ghcr.io/o/n:v1.0.0-dirty"):
        with pytest.raises(Exit, match=r"only clean vX\.Y\.Z"):
            check_pushable([ref], "prod")


def test_references_keep_registry_ports_apart_from_tags() -> None:
    assert split_ref("127.0.0.1:5000/o/n:abc") == ("127.0.0.1:5000/o/n", "abc")
    assert split_ref("127.0.0.1:5000/o/n") == ("127.0.0.1:5000/o/n", None)
    assert in_registry("ghcr.io/o/n", "127.0.0.1:5000") == "127.0.0.1:5000/o/n"
    assert in_registry("o/n", "127.0.0.1:5000/") == "127.0.0.1:5000/o/n"
    assert in_registry("ghcr.io/o/n", "") == "ghcr.io/o/n"
    assert image_refs("o/n", ["abc", "x/y:z"]) == ["o/n:abc", "x/y:z"]


def test_ci_publishes_main_as_sha_and_only_plain_release_tags(repo: Path) -> None:
    rev = imagetags.revision(Context(), repo)
    assert imagetags.publish_tags(rev, "refs/heads/main") == ("stage", [rev.short_sha])
    git(repo, "tag", "v1.2.3")
    released = imagetags.revision(Context(), repo)
    assert imagetags.publish_tags(released, "refs/tags/v1.2.3") == ("prod", ["v1.2.3"])
    with pytest.raises(Exit, match=r"'v1\.2\.3-rc\.1' is not a plain release tag"):
        imagetags.publish_tags(released, "refs/tags/v1.2.3-rc.1")
    with pytest.raises(Exit, match="does not point at the commit"):
        imagetags.publish_tags(rev, "refs/tags/v9.9.9")
    with pytest.raises(Exit, match=r"only main and vX\.Y\.Z tags publish"):
        imagetags.publish_tags(rev, "refs/heads/feature")
    (repo / "new.txt").write_text("x")
    with pytest.raises(Exit, match="dirty"):
        imagetags.publish_tags(imagetags.revision(Context(), repo), "refs/heads/main")
