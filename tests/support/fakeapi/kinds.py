"""The resources the fake API server serves, and its discovery documents.

Built-in groups are always served; the groups of CRDs (Traefik's `traefik.io`, k3s's
`helm.cattle.io`) only while the server has them installed (`FakeApiServer.crds`), as on a
fresh k3s whose bundled Traefik installs them a minute after start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One resource the fake serves."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


CRD_GROUPS = ("traefik.io", "helm.cattle.io")

RESOURCES: dict[tuple[str, str], Kind] = {
    (k.group, k.resource): k
    for k in (
        Kind("", "v1", "namespaces", "Namespace", namespaced=False),
        Kind("", "v1", "nodes", "Node", namespaced=False),
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind("", "v1", "secrets", "Secret"),
        Kind("", "v1", "serviceaccounts", "ServiceAccount"),
        Kind("", "v1", "pods", "Pod"),
        Kind("", "v1", "services", "Service"),
        Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
        Kind("", "v1", "events", "Event"),
        Kind("apps", "v1", "deployments", "Deployment"),
        Kind("apps", "v1", "statefulsets", "StatefulSet"),
        Kind("apps", "v1", "replicasets", "ReplicaSet"),
        Kind("batch", "v1", "jobs", "Job"),
        Kind("batch", "v1", "cronjobs", "CronJob"),
        Kind("networking.k8s.io", "v1", "ingresses", "Ingress"),
        Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
        Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        Kind("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False),
        Kind("coordination.k8s.io", "v1", "leases", "Lease"),
        Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
        Kind(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            namespaced=False,
        ),
        Kind("traefik.io", "v1alpha1", "middlewares", "Middleware"),
        Kind("helm.cattle.io", "v1", "helmchartconfigs", "HelmChartConfig"),
    )
}
BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in RESOURCES.values()}


def kind_of(obj: dict[str, Any]) -> Kind:
    """The Kind of an object by its apiVersion and kind (KeyError when not served here)."""
    return BY_KIND[(obj["apiVersion"], obj["kind"])]


def served_groups(crds: set[str]) -> list[str]:
    """The API groups served (""= core), CRD groups only when installed."""
    groups = {k.group for k in RESOURCES.values() if k.group not in CRD_GROUPS}
    return sorted(groups | (crds & set(CRD_GROUPS)))


def group_list(crds: set[str]) -> dict[str, Any]:
    """/apis: the APIGroupList (legacy discovery)."""
    groups = []
    for group in served_groups(crds):
        if not group:
            continue
        versions = sorted({k.version for k in RESOURCES.values() if k.group == group})
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str, crds: set[str]) -> dict[str, Any] | None:
    """/api/v1 or /apis/<group>/<version>: the APIResourceList, None when not served."""
    if group not in served_groups(crds):
        return None
    kinds = [k for k in RESOURCES.values() if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": k.resource,
                "singularName": k.kind.lower(),
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": list(k.verbs),
            }
            for k in kinds
        ],
    }
