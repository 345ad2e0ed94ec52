"""Teardown finds objects by label and kind: everything the overlays render must be findable.

A kind added to k8s/ without a place in teardown's kind list, or an object without our
labels, would silently survive `invoke deploy.teardown`; these tests fail first.
"""

from __future__ import annotations

from typing import Any

from support.selectors import matches

from desbordante_ops.cluster import teardown as td
from desbordante_ops.cluster.manifests.render import Rendered

from .kube_objects import pod_template, workloads


def resource_name(doc: dict[str, Any]) -> str:
    """The `kubectl` resource name of DOC's kind, e.g. `networkpolicies.networking.k8s.io`."""
    kind = doc["kind"].lower()
    plural = (
        kind[:-1] + "ies" if kind.endswith("y") else kind + ("es" if kind.endswith("s") else "s")
    )
    group = doc["apiVersion"].rpartition("/")[0]
    return f"{plural}.{group}" if group else plural


def test_every_rendered_kind_is_deleted_or_kept_as_data(rendered: Rendered) -> None:
    deletable = set(td.WORKLOAD_KINDS + td.CRD_KINDS)
    for doc in rendered.docs:
        if doc["kind"] in td.DATA_KINDS:
            continue
        assert resource_name(doc) in deletable, f"{doc['kind']} missing from teardown's kinds"


def test_every_rendered_object_and_pod_carries_the_teardown_labels(rendered: Rendered) -> None:
    for doc in rendered.docs:
        labels = doc["metadata"].get("labels", {})
        assert matches(td.SELECTOR, labels), f"{doc['kind']}/{doc['metadata']['name']}: {labels}"
    for workload in workloads(rendered.docs):
        labels = pod_template(workload)["metadata"]["labels"]
        assert matches(td.SELECTOR, labels), (
            f"pods of {workload['kind']}/{workload['metadata']['name']}"
        )


def test_resource_names_are_what_kubectl_calls_them() -> None:
    assert resource_name({"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1"}) == (
        "networkpolicies.networking.k8s.io"
    )
    assert resource_name({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1"}) == (
        "ingresses.networking.k8s.io"
    )
    assert resource_name({"kind": "Service", "apiVersion": "v1"}) == "services"
