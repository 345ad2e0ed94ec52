"""bootstrap: the dry-run plan from the real CLI, step bookkeeping, and the smoke-test loop."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from invoke import Exit, MockContext, Result
from support.fake_engine import FakeDocker, FakeImage

from desbordante_ops.cluster import bootstrap as bs
from desbordante_ops.cluster import k3s
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import bootstrap as bootstrap_tasks

ROOT = Path(__file__).resolve().parents[2]
STEP_NAMES = ("doctor", "k3s.install", "namespace", "secrets.generate", "images.build")


def test_dry_run_prints_the_whole_plan_and_exits_zero(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "bootstrap", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in (*STEP_NAMES, "images.load", "deploy", "smoke"):
        assert f" {name} " in out, name
    assert "dry run: nothing is touched" in out
    assert "v1.36.4+k3s1" in out  # from k3s.lock
    assert "desbordante-stage" in out
    assert "Traceback" not in proc.stderr


def test_second_run_reports_nothing_changed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = bs.Run(c=MockContext(), cfg=load_config("stage", environ={}), tag="abc1234", push=False)
    rounds = iter([True, False])
    ran: list[str] = []

    def step_of(name: str, changed: bool) -> Callable[[], bool]:
        def run() -> bool:
            ran.append(name)
            return changed

        return run

    def fake_steps(run: bs.Run) -> list[bs.Step]:
        changed = next(rounds)
        return [bs.Step(name, "plan", step_of(name, changed)) for name in STEP_NAMES]

    monkeypatch.setattr(bs, "steps", fake_steps)
    assert bs.bootstrap(ctx, dry_run=False) is True
    assert "changed: doctor" in capsys.readouterr().out
    assert bs.bootstrap(ctx, dry_run=False) is False
    assert "nothing changed" in capsys.readouterr().out
    assert ran == [*STEP_NAMES, *STEP_NAMES]  # in order, every time


def test_dry_run_runs_no_step(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = bs.Run(c=MockContext(), cfg=load_config("stage", environ={}), tag="abc1234", push=False)

    def boom() -> bool:
        raise AssertionError("a step ran during --dry-run")

    monkeypatch.setattr(bs, "steps", lambda context: [bs.Step("x", "plan", boom)])
    assert bs.bootstrap(ctx, dry_run=True) is False


def test_local_env_and_push_without_registry_are_user_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(Exit, match="stage"):
        bootstrap_tasks.bootstrap(MockContext(), env="local")
    monkeypatch.setenv("IMAGE_REGISTRY", "")
    with pytest.raises(Exit, match="IMAGE_REGISTRY"):
        bootstrap_tasks.bootstrap(MockContext(), env="stage", push=True)


class Api:
    """Serves the backend's HTTP contract for the smoke test (what the ingress would answer)."""

    def __init__(self, polls_until_done: int, final: str = "succeeded") -> None:
        self.polls_left, self.final = polls_until_done, final
        self.deleted: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/datasets":
            assert b"smoke.csv" in request.content
            return httpx.Response(201, json={"id": "d1"})
        if request.method == "POST" and path == "/api/v1/tasks":
            assert json.loads(request.content) == {"dataset_id": "d1", "primitive": "fd"}
            return httpx.Response(202, json={"id": "t1", "status": "queued"})
        if request.method == "GET" and path == "/api/v1/tasks/t1":
            assert request.url.params["wait"] == str(bs.SMOKE_WAIT_SECONDS)
            self.polls_left -= 1
            status = self.final if self.polls_left <= 0 else "running"
            result = {"fds": [{"lhs": ["a"], "rhs": "b"}]} if status == "succeeded" else None
            return httpx.Response(200, json={"id": "t1", "status": status, "result": result})
        if request.method == "DELETE" and path == "/api/v1/datasets/d1":
            self.deleted.append("d1")
            return httpx.Response(204)
        return httpx.Response(404)


def client(api: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(api), base_url="http://ingress")


def test_smoke_polls_until_the_task_succeeds_and_cleans_up() -> None:
    api = Api(polls_until_done=3)
    assert bs.smoke(client(api)) == "1 FDs found"
    assert api.deleted == ["d1"]


def test_smoke_gives_up_after_bounded_polls() -> None:
    api = Api(polls_until_done=99)
    with pytest.raises(Exit, match="not finished after 4 polls"):
        bs.smoke(client(api), timeout_polls=4)
    assert api.deleted == ["d1"]


def test_smoke_reports_a_failed_task() -> None:
    with pytest.raises(Exit, match="the task failed"):
        bs.smoke(client(Api(polls_until_done=1, final="failed")))


def test_second_run_reports_nothing_changed_through_the_image_id_comparison(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real images.load step: k3s answers with the same image ID (pinned) the second time."""
    docker = FakeDocker()
    monkeypatch.setattr(k3s, "is_root", lambda: True)
    monkeypatch.setattr(k3s.engine, "connect", lambda: docker)
    only_load = bs.steps
    monkeypatch.setattr(
        bs, "steps", lambda run: [s for s in only_load(run) if s.name == "images.load"]
    )

    def run_with(inspect: Result) -> bs.Run:
        c = MockContext(
            run={
                re.compile(r".*crictl inspecti .*"): inspect,
                re.compile(r".*ctr -n k8s\.io images (import|label) .*"): Result(""),
            },
            repeat=True,
        )
        return bs.Run(c=c, cfg=load_config("stage", environ={}), tag="abc1234", push=False)

    assert bs.bootstrap(run_with(Result("", exited=1)), dry_run=False) is True
    assert "changed: images.load" in capsys.readouterr().out
    assert bs.bootstrap(run_with(Result(f"{FakeImage.id} true\n")), dry_run=False) is False
    assert "nothing changed" in capsys.readouterr().out
    assert docker.image.named == [True]  # saved and imported once
