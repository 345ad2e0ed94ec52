"""Take an environment down: what is deployed there, found by our labels, not what HEAD renders.

Every object the overlays render carries `app.kubernetes.io/part-of=desbordante`,
`app.kubernetes.io/managed-by=desbordante-ops` and an `app.kubernetes.io/instance` label
(tests/manifests check that), so `kubectl delete -l` over an explicit list of kinds finds the
deployed release's objects, whatever tag it was: its `migrate-<tag>-<hash>` Job included.
Pods go with their owners (Deployment, StatefulSet, Job) by cascading deletion in the
foreground, so the command returns when they are gone; pods are not deleted directly, which
the devops Role may not do (every kind here is one it may delete, tests/unit/test_teardown.py).
Kept unless --purge-data: PersistentVolumeClaims, Secrets (created by the toolkit without an
instance label) and the namespace. --purge-data asks for the namespace to be typed BEFORE
anything is deleted, refuses without a terminal unless --yes, then deletes the workloads and
the namespace with everything in it. kubectl never gets our stdin (`in_stream=False`), so
nothing it runs can eat an answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from invoke import Context, Exit

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import kubectl
from desbordante_ops.core.console import ok, step
from desbordante_ops.core.settings import EnvConfig

# Our objects in a namespace: part of the stack, applied by the toolkit, of one instance.
SELECTOR = ",".join(
    [
        f"{names.PART_OF_LABEL}={names.APP_NAME}",
        *(f"{key}={value}" for key, value in names.MANAGED_BY.items()),
        names.INSTANCE_LABEL,  # present, whatever its value (K8S_NAMESPACE may rename it)
    ]
)
# Built-in kinds the overlays render, workloads first (their pods go with them).
WORKLOAD_KINDS = (
    "cronjobs.batch",
    "deployments.apps",
    "statefulsets.apps",
    "jobs.batch",
    "ingresses.networking.k8s.io",
    "services",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
    "configmaps",
)
# Kinds from CRDs (Traefik): absent from a cluster without them, which then has none to delete.
CRD_KINDS = ("middlewares.traefik.io",)
# Rendered but kept unless --purge-data (deleted with the namespace).
DATA_KINDS = ("Namespace", "PersistentVolumeClaim")
NO_SUCH_KIND = "the server doesn't have a resource type"

Ask = Callable[[str], str]


def stdin_is_terminal() -> bool:
    """True when a person can answer a prompt on our standard input."""
    return sys.stdin is not None and sys.stdin.isatty()


def delete_command(cfg: EnvConfig, kinds: tuple[str, ...]) -> str:
    """`kubectl delete` of our objects of KINDS in CFG's namespace, by label."""
    return kubectl(
        cfg,
        "delete",
        ",".join(kinds),
        "--namespace",
        cfg.namespace,
        "--selector",
        SELECTOR,
        "--ignore-not-found",
        "--cascade=foreground",
        "--wait",
    )


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


def delete_workloads(c: Context, cfg: EnvConfig) -> None:
    """Delete our objects except data (volume claims, Secrets, namespace); Exit on failure."""
    namespace = cfg.namespace
    result = c.run(delete_command(cfg, WORKLOAD_KINDS), warn=True, pty=False, in_stream=False)
    if result.exited != 0:
        raise Exit(f"Deleting the objects of {namespace} failed (exit {result.exited}); see above.")
    for kind in CRD_KINDS:
        result = c.run(
            delete_command(cfg, (kind,)), warn=True, hide="stderr", pty=False, in_stream=False
        )
        stderr = result.stderr or ""
        if result.exited != 0 and NO_SUCH_KIND not in stderr:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise Exit(f"Deleting the {kind} of {namespace} failed: {last}")


def teardown(
    c: Context,
    cfg: EnvConfig,
    purge_data: bool,
    yes: bool,
    ask: Ask = input,
    interactive: Callable[[], bool] = stdin_is_terminal,
) -> None:
    """Remove what is deployed in CFG's namespace; data too only when PURGE_DATA is confirmed."""
    namespace = cfg.namespace
    if purge_data:
        confirm_purge(namespace, yes, ask, interactive)
    step(f"Deleting the objects of {namespace} labelled {SELECTOR}")
    delete_workloads(c, cfg)
    if not purge_data:
        ok(f"workloads removed; volumes and Secrets of {namespace} kept (--purge-data deletes all)")
        return
    step(f"Deleting namespace {namespace} with its volumes and Secrets")
    result = c.run(
        kubectl(cfg, "delete", "namespace", namespace, "--ignore-not-found", "--wait"),
        warn=True,
        pty=False,
        in_stream=False,
    )
    if result.exited != 0:
        raise Exit(f"Deleting namespace {namespace} failed (exit {result.exited}); see above.")
    ok(f"namespace {namespace} and all its data deleted")
