"""Teardown finds objects by label and kind: everything the overlays render must be findable.

A kind added to k8s/ without a place in teardown's kind list, or an object without our
labels, would silently survive `invoke deploy.teardown`; these tests fail first.
"""

from __future__ import annotations

from support.selectors import matches

from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.release import teardown as td
from desbordante_ops.cluster.release.apply import NOT_PRUNED, PRUNE_KINDS

from .kube_objects import pod_template, workloads


def test_every_rendered_kind_is_deleted_or_kept_as_data(rendered: Rendered) -> None:
    deletable = {(kind.api_version, kind.kind) for kind in PRUNE_KINDS}
    for doc in rendered.docs:
        if doc["kind"] in NOT_PRUNED:
            continue
        assert (doc["apiVersion"], doc["kind"]) in deletable, (
            f"{doc['kind']} missing from teardown's kinds"
        )


def test_every_rendered_object_and_pod_carries_the_teardown_labels(rendered: Rendered) -> None:
    for doc in rendered.docs:
        labels = doc["metadata"].get("labels", {})
        assert matches(td.SELECTOR, labels), f"{doc['kind']}/{doc['metadata']['name']}: {labels}"
    for workload in workloads(rendered.docs):
        labels = pod_template(workload)["metadata"]["labels"]
        assert matches(td.SELECTOR, labels), (
            f"pods of {workload['kind']}/{workload['metadata']['name']}"
        )
