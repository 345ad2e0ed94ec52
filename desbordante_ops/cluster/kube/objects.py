"""Reading and changing objects through the typed clients: 404-tolerant reads and deletes,
namespaces, restarts, the running pod of a component."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube.names import MANAGED_BY

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
T = TypeVar("T")


def read_or_none(read: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """READ(*ARGS), or None when the API answers 404 (other errors propagate)."""
    try:
        return read(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def if_exists(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """CALL(*ARGS) (a delete or patch); False when the object does not exist (404)."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def ensure_namespace(core: k8s.CoreV1Api, name: str, labels: dict[str, str]) -> bool:
    """Create namespace NAME with LABELS unless it exists; True when it was created."""
    if read_or_none(core.read_namespace, name) is not None:
        return False
    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={**labels, **MANAGED_BY}))
    core.create_namespace(body)
    return True


def now_iso() -> str:
    """Current UTC time as RFC 3339, the format Kubernetes uses for timestamps."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def restart_workloads(
    apps: k8s.AppsV1Api,
    namespace: str,
    deployments: tuple[str, ...] = (),
    statefulsets: tuple[str, ...] = (),
    at: str | None = None,
) -> list[str]:
    """Roll the pods of the named workloads, as `kubectl rollout restart` does.

    Missing workloads are skipped; returns the names that were restarted.
    """
    stamp = at or now_iso()
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    targets = [(apps.patch_namespaced_deployment, n) for n in deployments] + [
        (apps.patch_namespaced_stateful_set, n) for n in statefulsets
    ]
    return [name for patch, name in targets if if_exists(patch, name, namespace, body)]


def first_running_pod(core: k8s.CoreV1Api, namespace: str, label_selector: str) -> str:
    """Name of a Running pod matching LABEL_SELECTOR; Exit when there is none."""
    pods = core.list_namespaced_pod(namespace, label_selector=label_selector).items
    for pod in pods:
        if pod.status and pod.status.phase == "Running":
            return str(pod.metadata.name)
    raise Exit(f"No running pod matches {label_selector} in {namespace}; deploy the stack first.")


def can_i(
    k8s_auth: k8s.AuthorizationV1Api,
    verb: str,
    resource: str,
    group: str = "",
    namespace: str = "",
) -> bool:
    """Whether this kubeconfig may VERB RESOURCE (SelfSubjectAccessReview, as `kubectl auth
    can-i` asks); False when even the question is refused."""
    review = k8s.V1SelfSubjectAccessReview(
        spec=k8s.V1SelfSubjectAccessReviewSpec(
            resource_attributes=k8s.V1ResourceAttributes(
                verb=verb, resource=resource, group=group, namespace=namespace or None
            )
        )
    )
    try:
        answer = k8s_auth.create_self_subject_access_review(review)
    except ApiException:
        return False
    return bool(answer.status and answer.status.allowed)
