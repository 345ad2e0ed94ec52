"""Read-only looks at a cluster for dry runs: connect, whether an object exists, which pod.

A dry run must print its plan even when the cluster cannot be read; these turn what cannot be
read into a plan row or a note (core/plan.py) instead of an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke import Exit

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import client
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import TRANSPORT_ERRORS, describe_error
from desbordante_ops.cluster.kube.objects import first_running_pod, read_or_none
from desbordante_ops.core.plan import Row, read_or_row, unreadable
from desbordante_ops.core.settings import EnvConfig

ABSENT, PRESENT = "absent", "present"


def connect(cfg: EnvConfig) -> tuple[Kube | None, list[Row]]:
    """The cluster connection, or None and the row saying why there is none."""
    return read_or_row(lambda: client.connect(cfg), f"the cluster of {cfg.name}")


def fetch(read: Callable[..., Any], *args: Any) -> tuple[Any | None, str]:
    """(object, PRESENT), (None, ABSENT), or (None, why it could not be read)."""
    try:
        found = read_or_none(read, *args)
    except TRANSPORT_ERRORS as exc:
        return None, f"not readable: {describe_error(exc)}"
    return found, ABSENT if found is None else PRESENT


def running_pod(k: Kube, namespace: str, component: str) -> str:
    """`pod NAME` of a running pod of COMPONENT, else a note why there is none."""
    try:
        return f"pod {first_running_pod(k.core, namespace, names.selector(component))}"
    except TRANSPORT_ERRORS as exc:
        return f"the {component} pod (not readable: {describe_error(exc)})"
    except Exit:
        return f"the {component} pod (none runs now: the real run would stop here)"


def state_row(state: str, what: str, absent: str, present: str) -> Row:
    """(ABSENT action, WHAT) / (PRESENT action, WHAT) by STATE (from `fetch`), else unknown."""
    if state == ABSENT:
        return (absent, what)
    if state == PRESENT:
        return (present, what)
    return unreadable(what, state)


def namespace_rows(k: Kube, name: str, detail: str = "") -> list[Row]:
    """[] when namespace NAME exists, else the row creating it (or saying it is unreadable)."""
    _, state = fetch(k.core.read_namespace, name)
    if state == PRESENT:
        return []
    return [state_row(state, f"namespace {name}{detail}", "create", "keep")]
