"""Deploy one release to a cluster environment (teardown: cluster/teardown.py).

deploy: namespace (through the API, never applied) -> Secrets present -> image pull Secret ->
what the manifests need from the cluster (Traefik CRDs, default StorageClass) -> `kubectl
diff` -> `kubectl apply --prune` -> wait for the release's migrate Job -> wait for every
Deployment and StatefulSet rollout (progress per workload) -> record the release. All waits
share one `--timeout` and stop early when a pod cannot start (rollout.py); on failure the
failing pods' events and last log lines are printed and the exit code is 1.

Prune: `kubectl apply --prune -l app.kubernetes.io/instance=<namespace>` with an explicit
`--prune-allowlist` of the namespaced kinds we render (PRUNE_ALLOWLIST), rather than an
ApplySet: ApplySet is still alpha in kubectl (KUBECTL_APPLYSET=true) and needs a parent object
plus rights on it, while the label prune needs only list/delete of these kinds inside the
namespace, which a devops user limited to the namespace has. Only objects that carry the label
*and* kubectl's last-applied annotation are candidates, so Secrets and access accounts (created
through the API) are never pruned; the release ledger lives in another namespace. Volume claims
are left out of the allowlist (data), and the Namespace is cluster-scoped: it is created through
the API by an admin when missing and never applied, so kubectl never warns about its missing
last-applied annotation.
No command line here carries a secret: Secrets are never rendered.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from invoke import Context, Exit
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import Kube, ensure_namespace, kubectl, read_or_none
from desbordante_ops.cluster.manifests.render import Rendered, with_pull_secret
from desbordante_ops.cluster.prereqs import wait_for_prerequisites
from desbordante_ops.cluster.registry import ensure_pull_secret
from desbordante_ops.cluster.releases import Confirm, gate_prod, record_release
from desbordante_ops.cluster.rollout import (
    FORBIDDEN,
    Clock,
    Deadline,
    diagnose,
    explain_blocker,
    job_state,
    wait_job,
    wait_rollouts,
)
from desbordante_ops.cluster.secrets import SPECS
from desbordante_ops.core.console import fail, ok, step
from desbordante_ops.core.settings import EnvConfig

ROLLOUT_TIMEOUT_SECONDS = 600
# Every namespaced kind the manifests contain, as kubectl's <group>/<version>/<kind>; a test
# checks each rendered kind is here or in NOT_PRUNED.
PRUNE_ALLOWLIST = (
    "core/v1/ConfigMap",
    "core/v1/Service",
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "batch/v1/Job",
    "batch/v1/CronJob",
    "networking.k8s.io/v1/Ingress",
    "networking.k8s.io/v1/NetworkPolicy",
    "policy/v1/PodDisruptionBudget",
    "traefik.io/v1alpha1/Middleware",
)
# Rendered kinds that prune never deletes, and why.
NOT_PRUNED = {
    "Namespace": "cluster-scoped: created through the API, never applied",
    "PersistentVolumeClaim": "holds data: only `deploy.teardown --purge-data` deletes it",
}
# Runs after the checks and before `kubectl apply` (rollback's schema check).
BeforeApply = Callable[[Rendered, Deadline], None]


@contextmanager
def manifest_file(docs: list[dict[str, Any]]) -> Iterator[str]:
    """DOCS written to a temporary file (no secrets are ever among them)."""
    with tempfile.NamedTemporaryFile("w", prefix="desbordante-", suffix=".yaml") as fh:
        yaml.safe_dump_all(docs, fh, sort_keys=False)
        fh.flush()
        yield fh.name


def prune_args(namespace: str) -> list[str]:
    """`--prune` scoped to NAMESPACE's objects and to the kinds we own."""
    return [
        "--prune",
        "-l",
        f"{names.INSTANCE_LABEL}={namespace}",
        *(f"--prune-allowlist={kind}" for kind in PRUNE_ALLOWLIST),
    ]


def applied_docs(rendered: Rendered) -> list[dict[str, Any]]:
    """What `kubectl apply` gets: everything rendered except the (cluster-scoped) Namespace."""
    return [doc for doc in rendered.docs if doc["kind"] != "Namespace"]


def kubectl_pruned(c: Context, cfg: EnvConfig, verb: str, path: str, namespace: str) -> Any:
    """`kubectl VERB -f PATH` with the prune flags; the Result (never raises on exit codes)."""
    command = kubectl(cfg, verb, "-f", path, *prune_args(namespace))
    return c.run(command, warn=True, pty=False, in_stream=False)


def kubectl_diff(c: Context, cfg: EnvConfig, path: str, namespace: str) -> bool:
    """Show `kubectl diff` (pruned objects included); True when the cluster differs."""
    result = kubectl_pruned(c, cfg, "diff", path, namespace)
    if result.exited in (0, 1):
        return bool(result.exited)
    raise Exit(f"kubectl diff failed (exit {result.exited}); see its output above.")


def kubectl_apply(c: Context, cfg: EnvConfig, path: str, namespace: str) -> None:
    """`kubectl apply --prune` of the manifests at PATH; one clear line when it fails."""
    result = kubectl_pruned(c, cfg, "apply", path, namespace)
    if not result.ok:
        raise Exit(f"kubectl apply failed (exit {result.exited}); see its output above.")


def ensure_release_namespace(k: Kube, rendered: Rendered) -> None:
    """Create the namespace through the API when it is missing (that needs a cluster admin).

    A user who may not read Namespace objects works inside an existing one: nothing to do.
    """
    namespace = rendered.namespace
    try:
        if read_or_none(k.core.read_namespace, namespace) is not None:
            return
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        return
    found = [doc for doc in rendered.docs if doc["kind"] == "Namespace"]
    labels = dict(found[0]["metadata"].get("labels") or {}) if found else {}
    try:
        if ensure_namespace(k.core, namespace, labels or dict(names.NAMESPACE_LABELS)):
            ok(f"namespace {namespace} created")
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        raise Exit(
            f"Namespace {namespace} does not exist and this kubeconfig may not create it; ask "
            f"a cluster admin to run `invoke secrets.generate --env {rendered.env}` once."
        ) from None


def check_secrets(core: Any, namespace: str, env: str) -> None:
    """Exit before applying anything when a Secret the pods mount does not exist yet."""
    missing = [
        s.name
        for s in SPECS
        if read_or_none(core.read_namespaced_secret, s.name, namespace) is None
    ]
    if missing:
        raise Exit(
            f"Secrets missing in {namespace}: {', '.join(missing)}; run "
            f"`invoke secrets.generate --env {env}` first."
        )


def check_timeout(timeout: float) -> float:
    """TIMEOUT if it is a usable number of seconds; Exit otherwise."""
    if not timeout > 0:
        raise Exit(f"--timeout {timeout}: give the seconds to wait, a number above 0.")
    return timeout


def deploy_release(
    c: Context,
    cfg: EnvConfig,
    k: Kube,
    rendered: Rendered,
    tag: str,
    yes: bool = False,
    confirm: Confirm = input,
    timeout: float = ROLLOUT_TIMEOUT_SECONDS,
    stage_core: Any = None,
    stage_namespace: str = "desbordante-stage",
    registry_auth: dict[str, str] | None = None,
    before_apply: BeforeApply | None = None,
    clock: Clock | None = None,
) -> bool:
    """The whole deploy of RENDERED (the manifests of TAG); True when anything changed.

    STAGE_CORE reads stage's release record for prod (default: the same cluster as K).
    REGISTRY_AUTH (username, password) creates or updates the image pull Secret. TIMEOUT
    bounds every wait together.
    """
    namespace = rendered.namespace
    if cfg.name == "prod":
        ledger_core = stage_core or k.core
        rendered = gate_prod(c, cfg, rendered, tag, ledger_core, stage_namespace, yes, confirm)
    deadline = Deadline.after(check_timeout(timeout), clock)
    ensure_release_namespace(k, rendered)
    check_secrets(k.core, namespace, cfg.name)
    pull_secret = ensure_pull_secret(k.core, namespace, rendered.image, registry_auth)
    if pull_secret:
        rendered = with_pull_secret(rendered, pull_secret)
    wait_for_prerequisites(k, namespace, rendered.docs, deadline)
    if before_apply is not None:
        before_apply(rendered, deadline)
    job = rendered.migrate_job
    if job and job_state(k, namespace, job) == "failed":
        step(f"job {job} failed before; deleting it to run it again")
        k.batch.delete_namespaced_job(job, namespace, propagation_policy="Background")
    docs = applied_docs(rendered)
    with manifest_file(docs) as path:
        step(f"Changes for {namespace} (kubectl diff, pruned objects included)")
        changed = kubectl_diff(c, cfg, path, namespace)
        if changed:
            step(f"Applying {len(docs)} objects to {namespace} (with prune)")
            kubectl_apply(c, cfg, path, namespace)
        else:
            ok("the cluster already matches the manifests")
    if job:
        step(f"Waiting for the migrate job {job}")
        state, blocker = wait_job(k, namespace, job, deadline)
        if blocker is not None:
            raise Exit(explain_blocker(k, namespace, blocker), 1)
        if state != "succeeded":
            diagnose(k, namespace, f"job-name={job}")
            reason = "did not succeed" if state == "failed" else f"not done after {timeout:.0f} s"
            raise Exit(f"Migration job {job} {reason}; see the events and logs above.", 1)
        ok(f"migrations applied ({job})")
    step("Waiting for the rollouts")
    pending, blocker = wait_rollouts(k, namespace, deadline)
    if blocker is not None:
        raise Exit(explain_blocker(k, namespace, blocker), 1)
    if pending:
        for item in pending:
            fail(f"{item.kind} {item.name}: {item.ready}/{item.desired} {item.problem}".rstrip())
        diagnose(k, namespace)
        late = f" within {timeout:.0f} s (`--timeout` waits longer)" if not deadline.left() else ""
        raise Exit(
            f"Rollout in {namespace} did not finish{late}; see the events and logs above.", 1
        )
    record_release(k, cfg, namespace, rendered.image, tag)
    ok(f"{rendered.image} is live in {namespace}" + ("" if changed else " (no changes)"))
    return changed
