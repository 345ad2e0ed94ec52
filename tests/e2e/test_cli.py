"""`invoke up`, `invoke status`, `invoke down` for real, as subprocesses from the repository root.

Runs before the HTTP scenarios (file order), only for the local target, and never touches a
stack that was already running (it would have to stop it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psutil
import pytest
from invoke import Context

from desbordante_ops.core.settings import REPO_ROOT, load_config
from desbordante_ops.local.credentials import read_secret, secret_path
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.local.supervise import SERVICES

SECRETS = ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASSWORD", "FLOWER_PASSWORD")


def invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def idle_local_stack(stack_kind: str) -> None:
    if stack_kind != "local":
        pytest.skip(f"the CLI run is for the local target, not {stack_kind}")
    if ProcessStack(Context(), load_config("local")).is_running():
        pytest.skip("a local stack is already running; not stopping someone else's stack")


@pytest.fixture
def cleanup() -> Iterator[None]:
    """Whatever happens in the test, leave no stack behind."""
    yield
    if ProcessStack(Context(), load_config("local")).is_running():
        invoke("down")


def test_up_status_down(idle_local_stack: None, cleanup: None) -> None:
    """CLI: invoke up, up again, status, down — processes gone afterwards."""
    cfg = load_config("local")
    first = invoke("up")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    for expected in ("Swagger UI", f"{cfg.toolkit.API_BASE_URL}/docs", "Flower login"):
        assert expected in first.stdout
    assert str(secret_path("FLOWER_PASSWORD", root=cfg.root)) in first.stdout

    stack = ProcessStack(Context(), cfg)
    pids = stack.sup.pids()
    assert len(pids) >= 4  # supervisord, api, worker (+ pool), flower
    assert httpx.get(f"{cfg.toolkit.API_BASE_URL}/health/ready", timeout=5).status_code == 200

    again = invoke("up")
    assert again.returncode == 0, again.stdout[-3000:]
    for service in SERVICES:
        assert f"{service} already running" in again.stdout

    status = invoke("status")
    assert status.returncode == 0
    lines = {line.split()[1]: line for line in status.stdout.splitlines() if line.count("│") > 3}
    assert "ready" in lines["api"] and "answers ping" in lines["worker"]
    assert "running" in lines["flower"]

    down = invoke("down")
    assert down.returncode == 0, down.stdout[-3000:]
    assert "data (database, uploads) is kept" in down.stdout
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "processes left after down"
    assert not stack.is_running()

    output = first.stdout + first.stderr + again.stdout + status.stdout + down.stdout
    for name in SECRETS:
        assert read_secret(secret_path(name, root=cfg.root)) not in output
