"""Small in-memory stand-ins for the kubernetes client API objects the cluster tasks use.

They model only what the logic relies on: 404 ApiException for missing objects, 409 on create
of an existing one, `string_data` turned into base64 `data` by the "server", merge patches.
They are fakes of an API object, not of a cluster: nothing here is called "tested on k8s".
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


def _missing(kind: str, name: str) -> ApiException:
    return ApiException(status=404, reason=f"{kind} {name} not found")


class FakeCore:
    """CoreV1Api subset: namespaces, secrets, pods (for listing)."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
        self.namespaces: dict[str, Any] = {}
        self.secrets: dict[tuple[str, str], Any] = {}
        self.config_maps: dict[tuple[str, str], Any] = {}
        self.pods: list[Any] = []
        self.calls: list[str] = []

    # namespaces
    def read_namespace(self, name: str) -> Any:
        if name not in self.namespaces:
            raise _missing("namespace", name)
        return self.namespaces[name]

    def create_namespace(self, body: Any) -> Any:
        self.calls.append(f"create_namespace {body.metadata.name}")
        self.namespaces[body.metadata.name] = body
        return body

    # secrets
    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.calls.append(f"read_secret {name}")
        if (namespace, name) not in self.secrets:
            raise _missing("secret", name)
        return copy.deepcopy(self.secrets[(namespace, name)])

    @staticmethod
    def _encode(values: dict[str, str] | None) -> dict[str, str]:
        return {k: base64.b64encode(v.encode()).decode() for k, v in (values or {}).items()}

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        name = body.metadata.name
        self.calls.append(f"create_secret {name}")
        if (namespace, name) in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        stored = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(
                name=name,
                namespace=namespace,
                labels=dict(body.metadata.labels or {}),
                annotations=dict(body.metadata.annotations or {}),
                creation_timestamp=self.now,
            ),
            type=body.type,
            data={**(body.data or {}), **self._encode(body.string_data)},
        )
        self.secrets[(namespace, name)] = stored
        return copy.deepcopy(stored)

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        self.calls.append(f"patch_secret {name}")
        if (namespace, name) not in self.secrets:
            raise _missing("secret", name)
        stored = self.secrets[(namespace, name)]
        stored.data = {**(stored.data or {}), **self._encode(body.string_data)}
        annotations = dict(stored.metadata.annotations or {})
        annotations.update(body.metadata.annotations or {})
        stored.metadata.annotations = annotations
        return copy.deepcopy(stored)

    # config maps (merge patch of data)
    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if (namespace, name) not in self.config_maps:
            raise _missing("configmap", name)
        return copy.deepcopy(self.config_maps[(namespace, name)])

    def create_namespaced_config_map(self, namespace: str, body: Any) -> Any:
        self.config_maps[(namespace, body.metadata.name)] = copy.deepcopy(body)
        return body

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any:
        if (namespace, name) not in self.config_maps:
            raise _missing("configmap", name)
        stored = self.config_maps[(namespace, name)]
        stored.data = {**(stored.data or {}), **(body.data or {})}
        return copy.deepcopy(stored)

    # pods, events, logs (diagnostics)
    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> Any:
        return k8s.V1PodList(items=list(self.pods))

    def list_namespaced_event(self, namespace: str, field_selector: str = "") -> Any:
        pod = field_selector.split("=", 1)[1]
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"{pod}.1"),
            involved_object=k8s.V1ObjectReference(name=pod),
            type="Warning",
            reason="BackOff",
            message=f"Back-off restarting failed container in {pod}",
        )
        return k8s.CoreV1EventList(items=[event])

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> str:
        return f"line 1 of {name}\nTraceback: boom in {name}\n"

    def value(self, namespace: str, name: str, key: str) -> str:
        """Decoded value of a stored secret key (test helper, not an API method)."""
        return base64.b64decode(self.secrets[(namespace, name)].data[key]).decode()


class FakeApps:
    """AppsV1Api subset: patching workloads (restarts) with 404 for unknown names."""

    def __init__(self, deployments: tuple[str, ...] = (), statefulsets: tuple[str, ...] = ()):
        self.deployments = {name: {} for name in deployments}
        self.statefulsets = {name: {} for name in statefulsets}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any) -> Any:
        if name not in self.deployments:
            raise _missing("deployment", name)
        self.patches.append(("deployment", name, body))
        return body

    def patch_namespaced_stateful_set(self, name: str, namespace: str, body: Any) -> Any:
        if name not in self.statefulsets:
            raise _missing("statefulset", name)
        self.patches.append(("statefulset", name, body))
        return body


def workload(name: str, replicas: int = 1, ready: int = 1, generation: int = 2) -> Any:
    """A Deployment/StatefulSet-shaped object with the status fields rollouts look at."""
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, generation=generation),
        spec=k8s.V1DeploymentSpec(replicas=replicas, selector=k8s.V1LabelSelector(), template={}),
        status=k8s.V1DeploymentStatus(
            observed_generation=generation,
            replicas=replicas,
            updated_replicas=ready,
            ready_replicas=ready,
            available_replicas=ready,
        ),
    )


class FakeRollouts(FakeApps):
    """FakeApps that also answers reads of workloads, with status from a dict (name -> ready)."""

    def __init__(self, ready: dict[str, int]) -> None:
        super().__init__(tuple(ready), ())
        self.ready = ready

    def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
        return workload(name, ready=self.ready[name])

    def read_namespaced_stateful_set(self, name: str, namespace: str) -> Any:
        ready = self.ready[name]
        return k8s.V1StatefulSet(
            metadata=k8s.V1ObjectMeta(name=name, generation=2),
            spec=k8s.V1StatefulSetSpec(
                replicas=1, selector=k8s.V1LabelSelector(), service_name=name, template={}
            ),
            status=k8s.V1StatefulSetStatus(
                observed_generation=2,
                replicas=1,
                ready_replicas=ready,
                updated_replicas=ready,
                current_revision=f"{name}-1",
                update_revision=f"{name}-1",
            ),
        )


class FakeBatch:
    """BatchV1Api subset: jobs with a fixed final state (`Complete` / `Failed` / None)."""

    def __init__(self, states: dict[str, str | None] | None = None) -> None:
        self.states = dict(states or {})
        self.deleted: list[str] = []

    def read_namespaced_job(self, name: str, namespace: str) -> Any:
        if name not in self.states:
            raise _missing("job", name)
        state = self.states[name]
        conditions = [k8s.V1JobCondition(type=state, status="True")] if state else []
        return k8s.V1Job(status=k8s.V1JobStatus(conditions=conditions))

    def delete_namespaced_job(self, name: str, namespace: str, **kw: Any) -> None:
        self.deleted.append(name)
        self.states.pop(name, None)
