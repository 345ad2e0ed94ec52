"""Deploy one release to a cluster environment (teardown: cluster/teardown.py).

deploy: rendered manifests -> `kubectl diff` -> `kubectl apply` -> wait for the release's
migrate Job -> wait for every Deployment and StatefulSet rollout (progress per workload) ->
record the release; on failure print the failing pods' events and last log lines, exit 1.
No command line here carries a secret: Secrets are never rendered.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from invoke import Context, Exit

from desbordante_ops.cluster.kube import Kube, kubectl, read_or_none
from desbordante_ops.cluster.releases import Confirm, gate_prod, record_release
from desbordante_ops.cluster.render import Rendered
from desbordante_ops.cluster.rollout import diagnose, job_state, wait_migrate, wait_rollouts
from desbordante_ops.cluster.secrets import SPECS
from desbordante_ops.core.console import fail, ok, step
from desbordante_ops.core.settings import EnvConfig

ROLLOUT_TIMEOUT_SECONDS = 600


@contextmanager
def manifest_file(docs: list[dict[str, Any]]) -> Iterator[str]:
    """DOCS written to a temporary file (no secrets are ever among them)."""
    with tempfile.NamedTemporaryFile("w", prefix="desbordante-", suffix=".yaml") as fh:
        yaml.safe_dump_all(docs, fh, sort_keys=False)
        fh.flush()
        yield fh.name


def kubectl_diff(c: Context, cfg: EnvConfig, path: str) -> bool:
    """Show `kubectl diff`; True when the cluster differs from the manifests."""
    result = c.run(kubectl(cfg, "diff", "-f", path), warn=True, pty=False, in_stream=False)
    if result.exited == 0:
        return False
    if result.exited == 1:
        return True
    raise Exit(f"kubectl diff failed (exit {result.exited}); see its output above.")


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
    **wait_kw: Any,
) -> bool:
    """The whole deploy of RENDERED (the manifests of TAG); True when anything changed.

    STAGE_CORE reads stage's release record for prod (default: the same cluster as K).
    """
    namespace = rendered.namespace
    if cfg.name == "prod":
        ledger_core = stage_core or k.core
        rendered = gate_prod(c, cfg, rendered, tag, ledger_core, stage_namespace, yes, confirm)
    check_secrets(k.core, namespace, cfg.name)
    job = rendered.migrate_job
    if job and job_state(k, namespace, job) == "failed":
        step(f"job {job} failed before; deleting it to run it again")
        k.batch.delete_namespaced_job(job, namespace, propagation_policy="Background")
    with manifest_file(rendered.docs) as path:
        step(f"Changes for {namespace} (kubectl diff)")
        changed = kubectl_diff(c, cfg, path)
        if changed:
            step(f"Applying {len(rendered.docs)} objects to {namespace}")
            c.run(kubectl(cfg, "apply", "-f", path), pty=False, in_stream=False)
        else:
            ok("the cluster already matches the manifests")
    if job:
        step(f"Waiting for the migrate job {job}")
        if wait_migrate(k, namespace, job, timeout, **wait_kw) != "succeeded":
            diagnose(k, namespace, f"job-name={job}")
            raise Exit(f"Migration job {job} did not succeed; see the events and logs above.", 1)
        ok(f"migrations applied ({job})")
    step("Waiting for the rollouts")
    pending = wait_rollouts(k, namespace, timeout, **wait_kw)
    if pending:
        for item in pending:
            fail(f"{item.kind} {item.name}: {item.ready}/{item.desired} {item.problem}".rstrip())
        diagnose(k, namespace)
        raise Exit(f"Rollout in {namespace} did not finish; see the events and logs above.", 1)
    record_release(k, cfg, namespace, rendered.image, tag)
    ok(f"{rendered.image} is live in {namespace}" + ("" if changed else " (no changes)"))
    return changed
