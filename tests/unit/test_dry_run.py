"""Which tasks take `--dry-run`: exactly those that change a server (the cluster, the k3s host,
a database) or a registry (issue 13). What each dry run prints, and that it is the plan the real
run executes, is tested with each area (e.g. test_secrets_plan.py, test_access_plan.py,
test_push_plan.py, test_deploy.py, test_teardown.py).
"""

from __future__ import annotations

import copy

import pytest
from invoke import Collection, Task

from desbordante_ops.tasks import namespace

CHANGES_A_SERVER = {
    "deploy.deploy",
    "deploy.teardown",
    "deploy.rollback",
    "secrets.generate",
    "access.grant",
    "access.revoke",
    "images.push",
    "k3s.install",
    "k3s.uninstall",
    "k3s.registry",
    "backup",
    "restore",
    "bootstrap.bootstrap",
    "releases.record",
    "verify",
}


def all_tasks(collection: Collection, prefix: str = "") -> dict[str, Task]:
    found = {f"{prefix}{name}": each for name, each in collection.tasks.items()}
    for name, sub in collection.collections.items():
        found.update(all_tasks(sub, f"{name}."))
    return found


# A copy: invoke consumes a task's help texts when it builds its arguments.
TASKS = all_tasks(copy.deepcopy(namespace()))


def test_the_list_names_real_tasks() -> None:
    assert CHANGES_A_SERVER - set(TASKS) == set()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_takes_dry_run_exactly_when_it_changes_a_server(name: str) -> None:
    arguments = {argument.name: argument for argument in TASKS[name].get_arguments()}
    if name not in CHANGES_A_SERVER:
        assert "dry_run" not in arguments and "dry-run" not in arguments
        return
    flag = arguments.get("dry_run") or arguments.get("dry-run")
    assert flag is not None, f"{name} has no --dry-run"
    assert flag.kind is bool and flag.default is False and flag.help
