"""The Invoke namespace: root tasks documented, every argument has help, areas pluggable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Collection, task

from desbordante_ops import namespace
from desbordante_ops.config import REPO_ROOT
from desbordante_ops.core_tasks import ROOT_TASKS

ROOT_NAMES = {"up", "down", "status", "logs", "doctor", "config"}


def test_root_tasks_documented_with_help_for_every_argument() -> None:
    assert {t.name for t in ROOT_TASKS} == ROOT_NAMES
    for root_task in ROOT_TASKS:
        doc = (root_task.__doc__ or "").strip()
        assert doc and "\n" not in doc, f"{root_task.name}: needs a one-line docstring"
        for argument in root_task.get_arguments():
            assert argument.help, f"{root_task.name} --{argument.name} has no help"


def test_build_skips_missing_area_and_survives_broken_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name == "desbordante_ops.broken":
            raise AttributeError("half-written module")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    ns = namespace.build(("no_such_area", "broken"))
    assert set(ns.tasks) == ROOT_NAMES
    assert "broken.* tasks unavailable: AttributeError" in capsys.readouterr().out


def test_add_area_adds_module_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    @task(help={"name": "who"})
    def hello(c, name="x"):
        """Say hello."""

    module = types.ModuleType("desbordante_ops.fakearea")
    module.hello = hello
    monkeypatch.setitem(sys.modules, "desbordante_ops.fakearea", module)
    ns = Collection()
    namespace.add_area(ns, "fakearea")
    assert "fakearea.hello" in ns.task_names


def run_invoke(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_invoke_list_and_help_from_repo_root() -> None:
    listing = run_invoke("--list")
    for name in ROOT_NAMES:
        assert f"  {name} " in listing
    helped = run_invoke("--help", "up")
    assert "--docker" in helped and "--timeout" in helped


def test_logs_takes_the_service_positionally(tmp_path: Path) -> None:
    env = {**os.environ, "LOCAL_RUN_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "logs", "bogus"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 1
    assert "Unknown service 'bogus'; use one of: api, worker, flower." in done.stderr
