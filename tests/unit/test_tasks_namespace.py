"""The Invoke namespace: every task documented, every argument has help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection

from desbordante_ops.config import REPO_ROOT
from desbordante_ops.core_tasks import ROOT_TASKS

ROOT_NAMES = {"up", "down", "status", "logs", "doctor", "config"}
AREAS = {"images", "k3s", "secrets", "deploy", "access", "bootstrap"}


def _all_tasks(collection: Collection) -> list:
    tasks = list(collection.tasks.values())
    for sub in collection.collections.values():
        tasks += _all_tasks(sub)
    return tasks


def test_every_task_has_a_one_line_docstring_and_help_for_every_argument() -> None:
    namespace = load_tasks_module()
    tasks = _all_tasks(namespace)
    assert {t.name for t in ROOT_TASKS} == ROOT_NAMES
    assert set(namespace.collections) == AREAS
    assert len(tasks) > 25
    for each in tasks:
        doc = (each.__doc__ or "").strip()
        assert doc and "\n" not in doc, f"{each.name}: needs a one-line docstring"
        for argument in each.get_arguments():
            assert argument.help, f"{each.name} --{argument.name} has no help"


def load_tasks_module() -> Collection:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tasks_under_test", REPO_ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


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
    for name in ("images.load", "secrets.generate", "deploy.render", "access.grant"):
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
