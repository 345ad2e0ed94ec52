"""What `invoke deploy` applies (`Rendered.applied_docs`, then the verify Job), checked on the
real render: prune selects every object we apply and covers every kind we own, nothing
cluster-scoped is applied, finished Jobs expire, and the prerequisites deploy waits for are
exactly what the manifests use."""

from __future__ import annotations

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.release.apply import NOT_PRUNED, PRUNE_KINDS
from desbordante_ops.cluster.release.prereqs import CustomKind, custom_kinds, needs_storage_class

MAX_JOB_TTL_SECONDS = 86400
PRUNED = {kind.allowlist for kind in PRUNE_KINDS}


def allowlist_entry(doc: dict[str, object]) -> str:
    """kubectl's <group>/<version>/<kind> for DOC (`core` for the core group)."""
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    return f"{group or 'core'}/{version}/{doc['kind']}"


def test_every_applied_object_is_selected_by_the_prune_label(rendered: Rendered) -> None:
    """Prune only looks at objects with the label (and would never delete the others); the
    verify Job, applied after the rollouts, is pruned by the next release the same way."""
    for doc in [*rendered.applied_docs, rendered.find("Job", rendered.verify_job)]:
        meta = doc["metadata"]
        assert meta["labels"][names.INSTANCE_LABEL] == rendered.namespace, meta["name"]
        assert meta["namespace"] == rendered.namespace, meta["name"]  # namespaced only


def test_every_kind_we_render_is_pruned_or_kept_on_purpose(rendered: Rendered) -> None:
    for doc in rendered.docs:
        if doc["kind"] in NOT_PRUNED:
            continue
        assert allowlist_entry(doc) in PRUNED, f"{doc['kind']}: add it to PRUNE_KINDS"


def test_the_namespace_is_rendered_but_never_applied(rendered: Rendered) -> None:
    assert rendered.of_kind("Namespace")
    assert not [doc for doc in rendered.applied_docs if doc["kind"] == "Namespace"]
    assert "PersistentVolumeClaim" in {d["kind"] for d in rendered.applied_docs}  # applied...
    assert not any(kind.kind == "PersistentVolumeClaim" for kind in PRUNE_KINDS)  # ...not pruned


def test_finished_migrate_and_verify_jobs_expire(rendered: Rendered) -> None:
    jobs = rendered.of_kind("Job")
    assert {job["metadata"]["name"] for job in jobs} == {rendered.migrate_job, rendered.verify_job}
    for job in jobs:
        assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= MAX_JOB_TTL_SECONDS


def test_deploy_applies_everything_but_the_namespace_and_the_verify_job(
    rendered: Rendered,
) -> None:
    """`Rendered.applied_docs`: deploy creates the verify Job itself after the rollouts."""
    left_out = [doc for doc in rendered.docs if doc not in rendered.applied_docs]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in left_out) == [
        ("Job", rendered.verify_job),
        ("Namespace", rendered.namespace),
    ]
    assert rendered.find("Job", rendered.migrate_job) in rendered.applied_docs


def test_deploy_waits_for_the_traefik_crds_and_a_default_storage_class(
    rendered: Rendered,
) -> None:
    assert custom_kinds(rendered.docs) == [CustomKind("traefik.io", "v1alpha1", "Middleware")]
    assert needs_storage_class(rendered.docs)
