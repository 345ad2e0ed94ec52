"""What `invoke deploy` applies, checked on the real render: prune selects every object we apply
and covers every kind we own, nothing cluster-scoped is applied, finished Jobs expire, and
the prerequisites deploy waits for are exactly what the manifests use."""

from __future__ import annotations

from desbordante_ops.cluster import names
from desbordante_ops.cluster.deploy import NOT_PRUNED, PRUNE_ALLOWLIST, applied_docs
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.prereqs import CustomKind, custom_kinds, needs_storage_class

MAX_JOB_TTL_SECONDS = 86400


def allowlist_entry(doc: dict[str, object]) -> str:
    """kubectl's <group>/<version>/<kind> for DOC (`core` for the core group)."""
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    return f"{group or 'core'}/{version}/{doc['kind']}"


def test_every_applied_object_is_selected_by_the_prune_label(rendered: Rendered) -> None:
    """`apply -l` skips objects without the label (and prune would never delete them)."""
    for doc in applied_docs(rendered):
        meta = doc["metadata"]
        assert meta["labels"][names.INSTANCE_LABEL] == rendered.namespace, meta["name"]
        assert meta["namespace"] == rendered.namespace, meta["name"]  # namespaced only


def test_every_kind_we_render_is_pruned_or_kept_on_purpose(rendered: Rendered) -> None:
    for doc in rendered.docs:
        if doc["kind"] in NOT_PRUNED:
            continue
        assert allowlist_entry(doc) in PRUNE_ALLOWLIST, f"{doc['kind']}: add it to the allowlist"


def test_the_namespace_is_rendered_but_never_applied(rendered: Rendered) -> None:
    assert rendered.of_kind("Namespace")
    assert not [doc for doc in applied_docs(rendered) if doc["kind"] == "Namespace"]
    assert "PersistentVolumeClaim" in {d["kind"] for d in applied_docs(rendered)}  # applied...
    assert not any("PersistentVolumeClaim" in entry for entry in PRUNE_ALLOWLIST)  # ...not pruned


def test_finished_migrate_jobs_expire(rendered: Rendered) -> None:
    (job,) = rendered.of_kind("Job")
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= MAX_JOB_TTL_SECONDS


def test_deploy_waits_for_the_traefik_crds_and_a_default_storage_class(
    rendered: Rendered,
) -> None:
    assert custom_kinds(rendered.docs) == [CustomKind("traefik.io", "v1alpha1", "Middleware")]
    assert needs_storage_class(rendered.docs)
