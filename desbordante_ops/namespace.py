"""Build the Invoke namespace: root tasks plus one sub-collection per area module."""

from __future__ import annotations

import importlib

from invoke import Collection

from .console import warn
from .core_tasks import ROOT_TASKS


def add_area(ns: Collection, name: str) -> None:
    """Add desbordante_ops.<name>'s tasks as `invoke <name>.<task>`.

    A module not written yet is skipped; one that fails to import is reported and skipped,
    so a broken area never takes the root tasks (up, down, doctor...) down with it.
    """
    module_name = f"desbordante_ops.{name}"
    try:
        module = importlib.import_module(module_name)
        ns.add_collection(Collection.from_module(module, name=name))
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            warn(f"{name}.* tasks unavailable: {exc}")
    except Exception as exc:  # report and keep the rest of the namespace usable
        warn(f"{name}.* tasks unavailable: {type(exc).__name__}: {exc}")


def build(areas: tuple[str, ...]) -> Collection:
    """The root collection: root tasks, then each area in order."""
    ns = Collection()
    for root_task in ROOT_TASKS:
        ns.add_task(root_task)
    for area in areas:
        add_area(ns, area)
    return ns
