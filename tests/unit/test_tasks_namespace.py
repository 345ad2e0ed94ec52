"""The Invoke namespace: every task documented, every argument has help, help works both ways."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Collection, Program, Task

from desbordante_ops.core.settings import REPO_ROOT
from desbordante_ops.tasks import namespace

ROOT_NAMES = {
    "up", "down", "status", "logs", "doctor", "config", "backup", "restore", "verify",
}  # fmt: skip
AREAS = {"images", "k3s", "secrets", "deploy", "releases", "autoupdate", "access", "bootstrap"}


def _all_tasks(collection: Collection, prefix: str = "") -> dict[str, Task]:
    tasks = {f"{prefix}{name}": task for name, task in collection.tasks.items()}
    for name, sub in collection.collections.items():
        tasks.update(_all_tasks(sub, f"{name}."))
    return tasks


# Invoke consumes a task's help texts when it builds its arguments: every use gets a fresh copy.
PRISTINE = copy.deepcopy(namespace())
ALL_TASKS = _all_tasks(copy.deepcopy(PRISTINE))


def test_every_task_has_a_one_line_docstring_and_help_for_every_argument() -> None:
    ns = namespace()
    assert set(ns.tasks) == ROOT_NAMES
    assert set(ns.collections) == AREAS
    assert len(ALL_TASKS) >= 25
    for name, each in ALL_TASKS.items():
        doc = (each.__doc__ or "").strip()
        assert doc and "\n" not in doc, f"{name}: needs a one-line docstring"
        assert each.body.__name__ == name.rpartition(".")[2], f"{name}: renamed in the code"
        for argument in each.get_arguments():
            assert argument.help, f"{name} --{argument.name} has no help"
            assert not argument.positional, f"{name}: positional {argument.name} breaks --help"


def run_invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_invoke_list_from_repo_root() -> None:
    listing = run_invoke("--list").stdout
    for name in ROOT_NAMES:
        assert f"  {name} " in listing
    for name in ("images.load", "secrets.generate", "deploy.render", "access.grant"):
        assert f"  {name} " in listing


def help_text(*argv: str) -> str:
    """`invoke ARGV` in this process (a fresh copy of the namespace: invoke consumes help)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        Program(namespace=copy.deepcopy(PRISTINE), binary="invoke").run(["invoke", *argv])
    assert done.value.code in (0, None), out.getvalue()
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_help_works_written_either_way(name: str) -> None:
    before, after = help_text("--help", name), help_text(name, "--help")
    assert before == after
    assert "Docstring:" in before
    for argument in copy.deepcopy(PRISTINE)[name].get_arguments():
        flag = argument.name.strip("_").replace("_", "-")
        assert f"--{flag}" in before and " ".join(argument.help.split()[:3]) in before


def test_logs_names_an_unknown_service(tmp_path: Path) -> None:
    env = {**os.environ, "LOCAL_RUN_DIR": str(tmp_path)}
    done = run_invoke("logs", "--service", "bogus", env=env)
    assert done.returncode == 1
    assert "Unknown service 'bogus'; use one of: api, worker, flower." in done.stderr
