"""A small generic client over plain manifests (dicts), for the kinds the toolkit manages.

The rendered manifests are dicts; applying them object by object with server-side apply,
listing what is deployed by label and deleting it need one client for every kind. This is
that client: a fixed table of the kinds we render or create (no discovery round trips, unlike
kubernetes.dynamic) and the REST calls of the real API through the kubernetes client's own
`ApiClient` (its configuration, authentication, TLS and errors).

Server-side apply (https://kubernetes.io/docs/reference/using-api/server-side-apply/) is a
PATCH with `application/apply-patch+yaml` and our field manager; `dryRun=All` makes the server
check and answer without storing anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube.objects import if_exists, read_or_none

FIELD_MANAGER = "desbordante-ops"
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Kind:
    """One kind of object and where the API serves it."""

    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def allowlist(self) -> str:
        """kubectl's `<group>/<version>/<kind>` spelling (`core` for the core group)."""
        return f"{self.group or 'core'}/{self.version}/{self.kind}"

    def path(self, namespace: str = "", name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        where = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")

    def __str__(self) -> str:
        return self.kind


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "", "v1", "namespaces", namespaced=False),
    Kind("ConfigMap", "", "v1", "configmaps"),
    Kind("Secret", "", "v1", "secrets"),
    Kind("Service", "", "v1", "services"),
    Kind("ServiceAccount", "", "v1", "serviceaccounts"),
    Kind("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    Kind("Pod", "", "v1", "pods"),
    Kind("Deployment", "apps", "v1", "deployments"),
    Kind("StatefulSet", "apps", "v1", "statefulsets"),
    Kind("Job", "batch", "v1", "jobs"),
    Kind("CronJob", "batch", "v1", "cronjobs"),
    Kind("Ingress", "networking.k8s.io", "v1", "ingresses"),
    Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
    Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
    Kind("Lease", "coordination.k8s.io", "v1", "leases"),
    Kind("Middleware", "traefik.io", "v1alpha1", "middlewares"),
    Kind("HelmChartConfig", "helm.cattle.io", "v1", "helmchartconfigs"),
)
_BY_NAME = {(k.api_version, k.kind): k for k in KINDS}


def kind_named(kind: str) -> Kind:
    """The Kind called KIND (e.g. "Deployment")."""
    for candidate in KINDS:
        if candidate.kind == kind:
            return candidate
    raise KeyError(kind)


def kind_of(doc: dict[str, Any]) -> Kind:
    """The Kind of a manifest; Exit for one the toolkit does not manage."""
    found = _BY_NAME.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if found is None:
        raise Exit(f"{doc.get('apiVersion')}/{doc.get('kind')} is not a kind the toolkit manages.")
    return found


def describe(doc: dict[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name` for a cluster-scoped object)."""
    meta = doc.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {where}{meta.get('name')}"


class Objects:
    """Get, list, apply, replace and delete plain manifests through the REST API."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        return self.api_client.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=True,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def get(self, kind: Kind, name: str, namespace: str = "") -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        found: dict[str, Any] | None = read_or_none(self._call, "GET", kind.path(namespace, name))
        return found

    def list(self, kind: Kind, namespace: str = "", selector: str = "") -> list[dict[str, Any]]:
        """The objects of KIND in NAMESPACE matching the label SELECTOR."""
        query = [("labelSelector", selector)] if selector else []
        answer = self._call("GET", kind.path(namespace), query)
        items: list[dict[str, Any]] = answer.get("items") or []
        for item in items:  # list items carry no apiVersion/kind of their own
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    def apply(
        self, doc: dict[str, Any], force: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of DOC as FIELD_MANAGER; the object as the server has it (or would
        have it, DRY_RUN). FORCE takes over fields other managers own (else 409 Conflict)."""
        kind, meta = kind_of(doc), doc["metadata"]
        query = [("fieldManager", FIELD_MANAGER)]
        query += [("force", "true")] if force else []
        query += [("dryRun", "All")] if dry_run else []
        path = kind.path(meta.get("namespace", ""), meta["name"])
        result: dict[str, Any] = self._call("PATCH", path, query, doc, APPLY_PATCH)
        return result

    def replace(self, doc: dict[str, Any]) -> dict[str, Any]:
        """PUT DOC (with the resourceVersion it was read at: 409 when it changed since)."""
        kind, meta = kind_of(doc), doc["metadata"]
        query = [("fieldManager", FIELD_MANAGER)]
        result: dict[str, Any] = self._call(
            "PUT", kind.path(meta.get("namespace", ""), meta["name"]), query, doc
        )
        return result

    def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str = "",
        propagation: str = "Background",
        dry_run: bool = False,
    ) -> bool:
        """Delete the object (its dependents by PROPAGATION); False when it did not exist."""
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if dry_run:
            body["dryRun"] = ["All"]
        query = [("dryRun", "All")] if dry_run else []
        return if_exists(self._call, "DELETE", kind.path(namespace, name), query, body)
