"""Take an environment down: what is deployed there, found by our labels, not what HEAD renders.

Every object the overlays render carries `app.kubernetes.io/part-of=desbordante`,
`app.kubernetes.io/managed-by=desbordante-ops` and an `app.kubernetes.io/instance` label
(tests/manifests check that), so a list by label over an explicit list of kinds finds the
deployed release's objects, whatever tag it was: its `migrate-<tag>-<hash>` and
`verify-<tag>-<hash>` Jobs included. Each is one step of the plan: deleted through the API
with foreground cascading (its pods go with it) and waited for until it is gone (bounded).
Pods are not deleted directly, which the devops Role may not do (every kind here is one it may
delete, tests/unit/test_teardown.py).
Kept unless --purge-data: PersistentVolumeClaims, Secrets (created by the toolkit without an
instance label) and the namespace. --purge-data asks for the namespace to be typed BEFORE
anything is deleted (the first step), refuses without a terminal unless --yes, then deletes
the workloads and the namespace with everything in it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from invoke import Exit
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import NOT_FOUND, describe_error
from desbordante_ops.cluster.kube.objects import if_exists, read_or_none
from desbordante_ops.cluster.kube.resources import Kind, describe, kind_named
from desbordante_ops.cluster.release.apply import PRUNE_KINDS
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Plan, Step, execute, note, unknown
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig

# Our objects in a namespace: part of the stack, applied by the toolkit, of one instance.
SELECTOR = ",".join(
    [
        f"{names.PART_OF_LABEL}={names.APP_NAME}",
        *(f"{key}={value}" for key, value in names.MANAGED_BY.items()),
        names.INSTANCE_LABEL,  # present, whatever its value (K8S_NAMESPACE may rename it)
    ]
)
# What a --purge-data plan lists as going with the namespace: every object of these kinds in
# it, ours or not (people's access from `access.grant` included).
PURGED_KINDS: tuple[Kind, ...] = (
    *PRUNE_KINDS,
    kind_named("PersistentVolumeClaim"),
    kind_named("Secret"),
    kind_named("ServiceAccount"),
)
GONE_TIMEOUT_SECONDS = 300
POLL_SECONDS = 1.0

Ask = Callable[[str], str]


def stdin_is_terminal() -> bool:
    """True when a person can answer a prompt on our standard input."""
    return sys.stdin is not None and sys.stdin.isatty()


def confirm_purge(namespace: str, yes: bool, ask: Ask, interactive: Callable[[], bool]) -> None:
    """Return only when purging NAMESPACE is confirmed (typed name, or YES); Exit otherwise."""
    if yes:
        return
    no_terminal = (
        f"--purge-data deletes every volume and Secret of {namespace} and needs a typed "
        "confirmation, but there is no terminal: pass --yes to purge without asking."
    )
    if not interactive():
        raise Exit(no_terminal)
    try:
        answer = ask(f"Delete ALL data of {namespace} (volumes, Secrets, namespace)? Type it: ")
    except EOFError:
        raise Exit(no_terminal) from None
    if answer.strip() != namespace:
        raise Exit(f"Not confirmed (expected {namespace!r}); nothing was deleted.")


def _gone(read: Callable[[], Any | None], what: str, sleep: Callable[[float], None]) -> None:
    left = poll(read, lambda found: found is None, GONE_TIMEOUT_SECONDS, POLL_SECONDS, sleep)
    if left is not None:
        raise Exit(f"{what} is still there after {GONE_TIMEOUT_SECONDS} s; see its events.")


def delete_step(k: Kube, obj: dict[str, Any], sleep: Callable[[float], None]) -> Step:
    """Delete OBJ (foreground: its pods first) and wait until it is gone."""
    kind = kind_named(obj["kind"])
    meta = obj["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "")

    def delete() -> None:
        k.objects.delete(kind, name, namespace, propagation="Foreground")
        _gone(lambda: k.objects.get(kind, name, namespace), describe(obj), sleep)

    return Step("delete", describe(obj), delete)


def found(
    k: Kube, namespace: str, kinds: tuple[Kind, ...], selector: str
) -> tuple[list[dict[str, Any]], list[Step]]:
    """The objects of KINDS in NAMESPACE matching SELECTOR, and rows for what could not be
    listed (a CRD kind not served: nothing to delete; anything else: unknown)."""
    objects: list[dict[str, Any]] = []
    rows: list[Step] = []
    for kind in kinds:
        try:
            objects += k.objects.list(kind, namespace, selector)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                rows.append(
                    note("skip", f"{kind.kind}: not served by this cluster (none to delete)")
                )
            else:
                rows.append(unknown(f"{kind.kind} objects of {namespace}", describe_error(exc)))
    return objects, rows


def teardown_plan(
    k: Kube,
    cfg: EnvConfig,
    purge_data: bool,
    yes: bool,
    ask: Ask = input,
    interactive: Callable[[], bool] = stdin_is_terminal,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """What `deploy.teardown` deletes in CFG's namespace, read from the cluster."""
    namespace = cfg.namespace
    steps: list[Step] = []
    if purge_data and not yes:
        steps.append(
            Step(
                "ask",
                f"type {namespace} to confirm the purge (--yes skips it)",
                lambda: confirm_purge(namespace, yes, ask, interactive),
            )
        )
    objects, rows = found(k, namespace, PRUNE_KINDS, SELECTOR)
    steps += rows + [delete_step(k, obj, sleep) for obj in objects]
    if not objects and not rows:
        steps.append(note("skip", f"none of our objects found in {namespace}"))
    if not purge_data:
        steps.append(note("keep", f"volume claims, Secrets and namespace {namespace}"))
        return Plan(f"deploy.teardown of {namespace}", steps)
    listed = {describe(obj) for obj in objects}
    rest, rows = found(k, namespace, PURGED_KINDS, "")
    steps += rows
    steps += [
        note("delete", f"{describe(obj)} (with the namespace)")
        for obj in rest
        if describe(obj) not in listed
    ]

    def delete_namespace() -> None:
        if_exists(k.core.delete_namespace, namespace)
        _gone(
            lambda: read_or_none(k.core.read_namespace, namespace), f"namespace {namespace}", sleep
        )
        ok(f"namespace {namespace} and all its data deleted")

    steps.append(Step("delete", f"namespace {namespace} and everything in it", delete_namespace))
    return Plan(f"deploy.teardown of {namespace}", steps)


def run_teardown(cfg: EnvConfig, purge_data: bool, yes: bool, dry_run: bool) -> None:
    """`invoke deploy.teardown`: plan it from what is deployed, and run it (or print it)."""
    k, why = connect_or_step(cfg)
    title = f"deploy.teardown of {cfg.namespace}"
    plan = Plan(title, why) if k is None else teardown_plan(k, cfg, purge_data, yes)
    execute(plan, dry_run)
