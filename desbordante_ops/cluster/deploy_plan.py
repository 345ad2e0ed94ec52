"""What `deploy --dry-run` and `deploy.rollback --dry-run` would do, read from the cluster.

The same steps as cluster/deploy.py, in the same order, each as a plan row (core/plan.py):
the deploy lock, the prod gate, the namespace, the Secrets, the pull Secret, what the manifests
need from the cluster, `kubectl diff` (it only reads: the real one shows the same diff), then
the waits and the record. Nothing is written; the prod gate never asks.
"""

from __future__ import annotations

from typing import Any

from invoke import Context

from desbordante_ops.cluster import lock, names, prereqs, reads
from desbordante_ops.cluster.deploy import (
    applied_docs,
    kubectl_diff,
    manifest_file,
)
from desbordante_ops.cluster.kube import Kube
from desbordante_ops.cluster.manifests.render import Rendered, with_pull_secret
from desbordante_ops.cluster.registry import PULL_SECRET, registry_of
from desbordante_ops.cluster.releases import LEDGER, SYSTEM_NAMESPACE, gate_prod
from desbordante_ops.cluster.rollback import check_job_name
from desbordante_ops.cluster.rollout import job_state
from desbordante_ops.cluster.secret_specs import SPECS
from desbordante_ops.core.plan import Row
from desbordante_ops.core.settings import EnvConfig


def _never_asked(question: str) -> str:
    raise AssertionError("a dry run never asks")  # the gate runs with yes=True


def lock_row(k: Kube, namespace: str) -> Row:
    holder = lock.current_holder(k.coordination, namespace)
    lease = f"Lease {namespace}/{lock.LEASE}"
    if holder is None:
        return ("take", f"the deploy lock ({lease})")
    return ("wait", f"the deploy lock ({lease}), held by {holder}: at most --timeout")


def _prerequisite_rows(k: Kube, docs: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for kind in prereqs.custom_kinds(docs):
        served = prereqs.served(k.custom, kind)
        rows.append(("check" if served else "wait", f"{kind} served by the cluster"))
    if prereqs.needs_storage_class(docs):
        default = prereqs.default_storage_class(k.storage)
        rows.append(
            ("check", f"default StorageClass {default}")
            if default
            else ("wait", "a default StorageClass (none yet)")
        )
    return rows


def plan_release(
    c: Context,
    cfg: EnvConfig,
    k: Kube,
    rendered: Rendered,
    tag: str,
    *,
    stage_core: Any = None,
    stage_namespace: str = "desbordante-stage",
    registry_auth: dict[str, str] | None = None,
) -> list[Row]:
    """The rows of deploying RENDERED (TAG) to CFG's environment on K; writes nothing."""
    namespace = rendered.namespace
    rows = [lock_row(k, namespace)]
    if cfg.name == "prod":
        rendered = gate_prod(
            c, cfg, rendered, tag, stage_core or k.core, stage_namespace, True, _never_asked
        )
        rows.append(("check", f"prod gate: {tag} ran on stage; prod runs {rendered.image}"))
        rows.append(("ask", f"type {tag} to confirm (unless --yes)"))
    rows += reads.namespace_rows(k, namespace)
    for spec in SPECS:
        _, state = reads.fetch(k.core.read_namespaced_secret, spec.name, namespace)
        if state != reads.PRESENT:
            rows.append(
                (
                    "stop",
                    f"Secret {namespace}/{spec.name} is {state}: run "
                    f"`invoke secrets.generate --env {cfg.name}` first",
                )
            )
    if registry_auth is not None:
        what = (
            f"Secret {namespace}/{PULL_SECRET} (pull credential for {registry_of(rendered.image)})"
        )
        rows.append(("create or update", what))
        rendered = with_pull_secret(rendered, PULL_SECRET)
    rows += _prerequisite_rows(k, rendered.docs)
    job = rendered.migrate_job
    if job and job_state(k, namespace, job) == "failed":
        rows.append(("delete", f"Job {namespace}/{job} (failed before; apply runs it again)"))
    docs = applied_docs(rendered)
    with manifest_file(docs) as path:
        changed = kubectl_diff(c, cfg, path, namespace)
    rows.append(
        ("apply", f"{len(docs)} objects with prune (the diff above)")
        if changed
        else ("keep", "the cluster already matches the manifests")
    )
    if job:
        rows.append(("wait", f"Job {namespace}/{job} (migrations)"))
    workloads = [
        f"{kind}/{name}"
        for kind, names_ in (("Deployment", names.DEPLOYMENTS), ("StatefulSet", names.STATEFULSETS))
        for name in names_
    ]
    rows.append(("wait", f"rollouts of {', '.join(workloads)} (at most --timeout)"))
    rows.append(("record", f"{tag} as {rendered.image} in {SYSTEM_NAMESPACE}/{LEDGER}"))
    rows.append(("configure", "Traefik (kube-system/traefik), when this kubeconfig may"))
    return rows


def plan_unreachable(rendered: Rendered, tag: str, why: list[Row]) -> list[Row]:
    """The rows of a deploy whose cluster cannot be read (WHY): what the release holds."""
    kinds = sorted({doc["kind"] for doc in applied_docs(rendered)})
    return [
        *why,
        (
            "apply",
            f"{len(applied_docs(rendered))} objects ({', '.join(kinds)}) with prune; "
            "what changes needs the cluster (`kubectl diff`)",
        ),
        ("wait", f"Job {rendered.namespace}/{rendered.migrate_job} and the rollouts"),
        ("record", f"{tag} as {rendered.image} in {SYSTEM_NAMESPACE}/{LEDGER}"),
    ]


def plan_rollback(
    c: Context,
    cfg: EnvConfig,
    k: Kube,
    rendered: Rendered,
    tag: str,
    live: str | None,
    **plan_kw: Any,
) -> list[Row]:
    """The rows of rolling back to RENDERED (TAG) from LIVE: the schema check, then the deploy."""
    check = check_job_name(tag, "<random>")
    rows: list[Row] = [
        ("roll back", f"{rendered.namespace}: {live or 'an unknown release'} -> {tag}"),
        (
            "run",
            f"Job {rendered.namespace}/{check} of {rendered.image}: `migrate --check` "
            "(refuses when the database is migrated past it)",
        ),
    ]
    return rows + plan_release(c, cfg, k, rendered, tag, **plan_kw)
