"""`invoke images.push [--dry-run]` as a plan: per reference the local image it starts from
(read from the engine), the tag it adds and the push, where the credentials come from; the dry
run tags and pushes nothing, the real run executes those steps. The Docker engine is a stand-in
for docker-py's client (the calls images.push makes); git is a MockContext. The push on a real
engine and registry: tests/images.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from docker.errors import ImageNotFound
from invoke import Exit, MockContext, Result
from support.mockrun import commands
from support.plans import plan_lines

from desbordante_ops.core import plan
from desbordante_ops.core.plan import Seen
from desbordante_ops.core.settings import load_config
from desbordante_ops.image import push as image_push
from desbordante_ops.tasks import images as images_tasks

LOCAL = "ghcr.io/desbordante/desbordante-backend"
REMOTE = "127.0.0.1:5000/desbordante/desbordante-backend"
IMAGE_ID = "sha256:0123456789ab" + "cd" * 26
SHORT_ID = "sha256:0123456789ab"
DIGEST = "sha256:" + "ef" * 32
DOCKER_CONFIG = "credentials: the Docker config of this user (if any)"

pytestmark = pytest.mark.usefixtures("wide_console")


def git_reads(tag: str = "v1.2.0") -> MockContext:
    """A MockContext answering the git reads of the image tags (HEAD at TAG, clean tree)."""
    return MockContext(
        run={
            re.compile(r"^git -C \S+ log -1 '--format="): Result("f" * 40 + " abc1234 17000\n"),
            re.compile(r"^git -C \S+ tag --points-at HEAD$"): Result(f"{tag}\n"),
            re.compile(r"^git -C \S+ status --porcelain"): Result(""),
        },
        repeat=True,
    )


class FakeImage:
    """docker-py's Image: its short id, and `tag` adding a reference in the engine."""

    def __init__(self, engine: FakeEngine, image_id: str) -> None:
        self.engine, self.id = engine, image_id
        self.short_id = image_id[:19]

    def tag(self, repository: str, tag: str | None = None) -> bool:
        self.engine.refs[f"{repository}:{tag}"] = self.id
        self.engine.tagged.append(f"{repository}:{tag}")
        return True


class FakeEngine:
    """The docker-py client calls images.push makes: `images.get(ref)` (ImageNotFound for a
    reference the engine does not have), `Image.tag`, and `api.push`, which streams the
    engine's decoded JSON progress (an error inside the stream, as the engine reports one)."""

    def __init__(self, *present: str, refused: str = "") -> None:
        self.refs = dict.fromkeys(present, IMAGE_ID)
        self.refused = refused  # a registry error for every push
        self.tagged: list[str] = []
        self.pushed: list[tuple[str, dict[str, str] | None]] = []
        self.images = self
        self.api = self

    def get(self, ref: str) -> FakeImage:
        if ref not in self.refs:
            raise ImageNotFound(f"No such image: {ref}")
        return FakeImage(self, self.refs[ref])

    def push(
        self,
        repository: str,
        tag: str | None = None,
        stream: bool = False,
        decode: bool = False,
        auth_config: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        assert stream and decode
        ref = f"{repository}:{tag}"
        if ref not in self.refs:
            return iter([{"error": f"tag does not exist: {ref}"}])
        if self.refused:
            message = f"unauthorized: {self.refused}"
            return iter([{"errorDetail": {"message": message}, "error": message}])
        self.pushed.append((ref, auth_config))
        return iter(
            [
                {"status": f"The push refers to repository [{repository}]"},
                {"id": "0123456789ab", "status": "Pushing", "progressDetail": {"current": 1}},
                {"id": "0123456789ab", "status": "Pushed", "progressDetail": {}},
                {"status": f"{tag}: digest: {DIGEST} size: 1234"},
                {"progressDetail": {}, "aux": {"Tag": tag, "Digest": DIGEST, "Size": 1234}},
            ]
        )


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("IMAGE_REGISTRY", raising=False)


def use(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> FakeEngine:
    monkeypatch.setattr(image_push.engine, "connect", lambda: engine)
    return engine


def twice(build: Any) -> tuple[Seen, Seen]:
    with plan.watching() as seen:
        plan.execute(build(), dry_run=True)
        plan.execute(build())
    return seen[0], seen[1]


def test_plan_is_run_tagging_and_pushing_each_reference(
    monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    engine = use(monkeypatch, FakeEngine(f"{LOCAL}:v1.2.0", f"{LOCAL}:abc1234"))
    cfg = load_config("stage", environ={})
    digests: dict[str, str] = {}

    def build() -> plan.Plan:
        return image_push.push_plan(git_reads(), cfg, "127.0.0.1:5000", auth=None, digests=digests)

    with plan.watching() as seen:
        plan.execute(build(), dry_run=True)
        assert engine.tagged == [] and engine.pushed == [] and digests == {}
        plan.execute(build())
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert real.rows == [
        ("tag", f"{LOCAL}:v1.2.0 as {REMOTE}:v1.2.0"),
        ("push", f"{REMOTE}:v1.2.0 (local image {SHORT_ID}; {DOCKER_CONFIG})"),
        ("tag", f"{LOCAL}:abc1234 as {REMOTE}:abc1234"),
        ("push", f"{REMOTE}:abc1234 (local image {SHORT_ID}; {DOCKER_CONFIG})"),
    ]
    assert engine.tagged == [f"{REMOTE}:v1.2.0", f"{REMOTE}:abc1234"]
    assert engine.pushed == [(f"{REMOTE}:v1.2.0", None), (f"{REMOTE}:abc1234", None)]
    assert digests == {f"{REMOTE}:v1.2.0": DIGEST, f"{REMOTE}:abc1234": DIGEST}


def test_the_task_dry_run_then_the_real_push_with_credentials_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    engine = use(monkeypatch, FakeEngine(f"{LOCAL}:v1.2.0", f"{LOCAL}:abc1234"))
    monkeypatch.setenv("REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("REGISTRY_PASSWORD", "pw-registry-9")
    c = git_reads()
    with plan.watching() as seen:
        images_tasks.push(c, env="stage", registry="127.0.0.1:5000", dry_run=True)
        assert engine.tagged == [] and engine.pushed == []
        images_tasks.push(c, env="stage", registry="127.0.0.1:5000")
    assert {cmd.split()[3] for cmd in commands(c)} == {"log", "tag", "status"}  # reads only
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    env = "credentials: REGISTRY_USERNAME / REGISTRY_PASSWORD from the environment"
    assert real.rows[1] == ("push", f"{REMOTE}:v1.2.0 (local image {SHORT_ID}; {env})")
    auth = {"username": "robot", "password": "pw-registry-9"}
    assert engine.pushed == [(f"{REMOTE}:v1.2.0", auth), (f"{REMOTE}:abc1234", auth)]
    out = capsys.readouterr().out
    assert f"Pushed {REMOTE}:v1.2.0 ({DIGEST})" in out
    assert "pw-registry-9" not in out


def test_a_missing_local_image_is_a_row_in_the_dry_run_and_stops_the_run_before_any_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    """Changed by design: the missing image's row is its push, refused (no tag row for it);
    the real run refuses before it tags or pushes anything, even the image that exists."""
    engine = use(monkeypatch, FakeEngine(f"{LOCAL}:v1.2.0"))
    images_tasks.push(git_reads(), env="stage", registry="127.0.0.1:5000", dry_run=True)
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ tag │ {LOCAL}:v1.2.0 as {REMOTE}:v1.2.0 │",
        f"│ 2 │ push │ {REMOTE}:v1.2.0 (local image {SHORT_ID}; {DOCKER_CONFIG}) │",
        f"│ 3 │ push │ {REMOTE}:abc1234: no local image {LOCAL}:abc1234 (the real run stops "
        "here) │",
    ]
    with pytest.raises(Exit) as info:
        images_tasks.push(git_reads(), env="stage", registry="127.0.0.1:5000")
    assert info.value.message == f"No local image {LOCAL}:abc1234; run invoke images.build first."
    assert engine.tagged == [] and engine.pushed == []


def test_without_an_engine_the_dry_run_still_prints_its_plan_and_the_run_stops(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    def no_engine() -> Any:
        raise Exit("No Docker engine answers at the local socket (gone); install Docker.")

    monkeypatch.setattr(image_push.engine, "connect", no_engine)
    monkeypatch.setenv("REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("REGISTRY_PASSWORD", "pw-registry-9")
    images_tasks.push(git_reads(), env="prod", dry_run=True)
    out = capsys.readouterr().out
    assert "pw-registry-9" not in out
    assert plan_lines(out) == [
        "│ 1 │ unknown │ the Docker engine: No Docker engine answers at the local socket (gone); "
        "install Docker │",
        f"│ 2 │ push │ {LOCAL}:v1.2.0 (local image not checked; credentials: REGISTRY_USERNAME "
        "/ REGISTRY_PASSWORD from the environment) │",
    ]
    with pytest.raises(Exit) as info:
        images_tasks.push(git_reads(), env="prod")
    assert info.value.message == (
        "Cannot go on: the Docker engine: No Docker engine answers at the local socket (gone); "
        "install Docker."
    )


def test_prod_takes_only_the_release_tag_and_refuses_a_revision_without_one(
    monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    engine = use(monkeypatch, FakeEngine(f"{LOCAL}:v1.2.0", f"{LOCAL}:abc1234"))
    with plan.watching() as seen:
        images_tasks.push(git_reads(), env="prod")
    assert seen[0].ran == [("push", f"{LOCAL}:v1.2.0 (local image {SHORT_ID}; {DOCKER_CONFIG})")]
    assert engine.tagged == []  # the same reference: nothing to tag
    for dry_run in (True, False):
        with pytest.raises(Exit, match=r"Refusing to push \S+:abc1234 for prod: only clean v"):
            images_tasks.push(git_reads(tag=""), env="prod", dry_run=dry_run)
    assert engine.pushed == [(f"{LOCAL}:v1.2.0", None)]


def test_a_registry_error_in_the_stream_fails_the_push_in_one_line(
    monkeypatch: pytest.MonkeyPatch, no_credentials: None
) -> None:
    engine = use(monkeypatch, FakeEngine(f"{LOCAL}:v1.2.0", f"{LOCAL}:abc1234", refused="token"))
    with plan.watching() as seen, pytest.raises(Exit) as info:
        images_tasks.push(git_reads(), env="stage", registry="127.0.0.1:5000")
    assert info.value.message == f"Push of {REMOTE}:v1.2.0 failed: unauthorized: token"
    assert [action for action, _ in seen[0].ran] == ["tag", "push"]  # stopped at the first
    assert engine.pushed == []
