"""What the manifests need from the cluster before they can be applied.

- every custom kind they contain must be served (API discovery of its group/version): on a fresh
  k3s the bundled Traefik installs `traefik.io/v1alpha1` (Middleware) a minute after start, and
  an apply before that fails with `no matches for kind "Middleware"`;
- volume claims without a storageClassName need a default StorageClass (k3s: `local-path`).
Deploy waits for both (bounded, with progress) and exits with what to do when they stay absent.
A kubeconfig that may not list StorageClasses (a namespace-only devops user) skips that check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release.apply import BUILTIN_GROUPS
from desbordante_ops.cluster.release.rollout import FORBIDDEN, Deadline, Rollout, Snapshot, watch
from desbordante_ops.core.console import warn

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


@dataclass(frozen=True)
class CustomKind:
    group: str
    version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.group}/{self.version})"


def custom_kinds(docs: list[dict[str, Any]]) -> list[CustomKind]:
    """The kinds of DOCS that a CRD provides, in order of appearance."""
    found: dict[CustomKind, None] = {}
    for doc in docs:
        group, _, version = doc["apiVersion"].rpartition("/")
        if group not in BUILTIN_GROUPS:
            found[CustomKind(group, version, doc["kind"])] = None
    return list(found)


def needs_storage_class(docs: list[dict[str, Any]]) -> bool:
    """True when a volume claim (or claim template) leaves the StorageClass to the default."""
    claims = [doc["spec"] for doc in docs if doc["kind"] == "PersistentVolumeClaim"]
    claims += [
        template["spec"]
        for doc in docs
        if doc["kind"] == "StatefulSet"
        for template in doc["spec"].get("volumeClaimTemplates", [])
    ]
    return any(not claim.get("storageClassName") for claim in claims)


def served(custom: k8s.CustomObjectsApi, kind: CustomKind) -> bool:
    """True when API discovery lists KIND under its group/version (404: not installed yet)."""
    try:
        resources = custom.get_api_resources(kind.group, kind.version)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(r.kind == kind.kind for r in resources.resources or [])


def default_storage_class(storage: k8s.StorageV1Api) -> str | None:
    """Name of the default StorageClass, or None (ApiException 403 when not allowed to list)."""
    for item in storage.list_storage_class().items:
        annotations = item.metadata.annotations or {}
        if any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS):
            return str(item.metadata.name)
    return None


def _storage_ready(k: Kube) -> bool | None:
    """True/False, or None when this kubeconfig may not list StorageClasses."""
    try:
        return default_storage_class(k.storage) is not None
    except ApiException as exc:
        if exc.status == FORBIDDEN:
            return None
        raise


def missing_message(what: Rollout, seconds: float) -> str:
    if what.kind == "CRD":
        return (
            f"{what.name} is not served by the cluster after {seconds:.0f} s: the manifests need "
            "Traefik's CRDs. k3s installs them with its bundled Traefik (check `kubectl -n "
            "kube-system get pods`; k3s must not run with --disable traefik); on another cluster "
            "install Traefik v3 first."
        )
    return (
        f"No default StorageClass after {seconds:.0f} s: the volume claims need one. k3s ships "
        "`local-path` (check `kubectl get storageclass`); on another cluster mark one as default "
        "(annotation storageclass.kubernetes.io/is-default-class=true)."
    )


def wait_for_prerequisites(
    k: Kube, namespace: str, docs: list[dict[str, Any]], deadline: Deadline
) -> None:
    """Wait until everything DOCS need is in the cluster; Exit naming what stayed absent."""
    kinds = custom_kinds(docs)
    check_storage = needs_storage_class(docs)
    if check_storage and _storage_ready(k) is None:
        warn("this kubeconfig may not list StorageClasses: the default StorageClass is not checked")
        check_storage = False

    def check() -> Snapshot:
        items = []
        for kind in kinds:
            ok = served(k.custom, kind)
            items.append(
                Rollout("CRD", str(kind), 1, int(ok), ok, note="" if ok else "not served yet")
            )
        if check_storage:
            ok = bool(_storage_ready(k))
            items.append(Rollout("StorageClass", "default", 1, int(ok), ok))
        return Snapshot(items, all(item.done for item in items))

    first = check()
    if first.done:
        return
    snap, _ = watch(k, namespace, check, deadline)
    absent = [item for item in snap.items if not item.done]
    if absent:
        raise Exit(missing_message(absent[0], deadline.seconds))
