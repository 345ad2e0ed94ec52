"""Small in-memory stand-ins for the kubernetes client API objects the cluster tasks use.

They model what the logic relies on and what a real API server enforces there: 404
ApiException for missing objects (and for an API group that is not served), 403 where RBAC
would deny, 409 on create of an existing object, 422 on a change of a Job's (immutable) pod
template, `string_data` turned into base64 `data`, label selectors filtering lists, and `None`
from `read_namespaced_pod_log` for a 204 No Content answer (what the real client returns).
They are fakes of API objects, not of a cluster: nothing here is called "tested on k8s".
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import names


def _missing(kind: str, name: str) -> ApiException:
    return ApiException(status=404, reason=f"{kind} {name} not found")


def forbidden(what: str) -> ApiException:
    """The 403 RBAC answers with."""
    return ApiException(status=403, reason=f"Forbidden: {what}")


def matches(labels: dict[str, str] | None, selector: str) -> bool:
    """Equality-based label selector `k=v,k2=v2` ("" selects everything), as the server does."""
    labels = labels or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class FakeClock:
    """Monotonic time that only moves when a wait sleeps (so grace periods are testable)."""

    t: float = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeCore:
    """CoreV1Api subset: namespaces, secrets, config maps, pods, events and logs."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
        self.namespaces: dict[str, Any] = {}
        self.secrets: dict[tuple[str, str], Any] = {}
        self.config_maps: dict[tuple[str, str], Any] = {}
        self.pods: list[Any] = []
        # pod name -> events; pods not listed get one synthetic BackOff event
        self.events: dict[str, list[Any]] = {}
        # (pod, container) -> log text; None answers like a 204 (the client returns None)
        self.logs: dict[tuple[str, str], str | None] = {}
        self.may_create_namespaces = True
        self.may_read_namespaces = True
        self.calls: list[str] = []

    # namespaces
    def read_namespace(self, name: str) -> Any:
        if not self.may_read_namespaces:
            raise forbidden(f"cannot get resource namespaces {name}")
        if name not in self.namespaces:
            raise _missing("namespace", name)
        return self.namespaces[name]

    def create_namespace(self, body: Any) -> Any:
        self.calls.append(f"create_namespace {body.metadata.name}")
        if not self.may_create_namespaces:
            raise forbidden("cannot create resource namespaces at the cluster scope")
        if body.metadata.name in self.namespaces:
            raise ApiException(status=409, reason="AlreadyExists")
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
            type=body.type or "Opaque",
            data={**(body.data or {}), **self._encode(body.string_data)},
        )
        self._stamp(stored)
        self.secrets[(namespace, name)] = stored
        return copy.deepcopy(stored)

    def _stamp(self, secret: Any) -> None:
        """A new resourceVersion, as the server gives every write."""
        self.version = getattr(self, "version", 0) + 1
        secret.metadata.resource_version = str(self.version)

    def replace_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        """PUT: 404 when missing, 409 when BODY's resourceVersion is not the stored one."""
        self.calls.append(f"replace_secret {name}")
        if (namespace, name) not in self.secrets:
            raise _missing("secret", name)
        stored = self.secrets[(namespace, name)]
        if body.metadata.resource_version != stored.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        new = copy.deepcopy(body)
        new.data = {**(body.data or {}), **self._encode(body.string_data)}
        new.string_data = None
        self._stamp(new)
        self.secrets[(namespace, name)] = new
        return copy.deepcopy(new)

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        self.calls.append(f"patch_secret {name}")
        if (namespace, name) not in self.secrets:
            raise _missing("secret", name)
        stored = self.secrets[(namespace, name)]
        if body.type and body.type != stored.type:
            raise ApiException(status=422, reason="Invalid: type: field is immutable")
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
        return k8s.V1PodList(
            items=[p for p in self.pods if matches(p.metadata.labels, label_selector)]
        )

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        for pod in self.pods:
            if pod.metadata.name == name:
                return pod
        raise _missing("pod", name)

    def list_namespaced_event(self, namespace: str, field_selector: str = "") -> Any:
        pod = field_selector.split("=", 1)[1]
        if pod in self.events:
            return k8s.CoreV1EventList(items=list(self.events[pod]))
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"{pod}.1"),
            involved_object=k8s.V1ObjectReference(name=pod),
            type="Warning",
            reason="BackOff",
            message=f"Back-off restarting failed container in {pod}",
        )
        return k8s.CoreV1EventList(items=[event])

    def read_namespaced_pod_log(
        self, name: str, namespace: str, container: str = "", **kw: Any
    ) -> str | None:
        if (name, container) in self.logs:
            return self.logs[(name, container)]
        return f"line 1 of {name}\nTraceback: boom in {name}\n"

    def value(self, namespace: str, name: str, key: str) -> str:
        """Decoded value of a stored secret key (test helper, not an API method)."""
        return base64.b64decode(self.secrets[(namespace, name)].data[key]).decode()


class FakeApps:
    """AppsV1Api subset: patching workloads (restarts) with 404 for unknown names."""

    def __init__(self, deployments: tuple[str, ...] = (), statefulsets: tuple[str, ...] = ()):
        self.deployments: dict[str, dict[str, Any]] = {name: {} for name in deployments}
        self.statefulsets: dict[str, dict[str, Any]] = {name: {} for name in statefulsets}
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


def component_labels(name: str) -> dict[str, str]:
    """The selector labels of a workload of ours (k8s/base)."""
    return {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: name}


# The revision each fake Deployment is at, and the pod-template-hash of its newest ReplicaSet.
REVISION, NEW_HASH, OLD_HASH = "2", "new5f7d", "old9c3b"


def workload(
    name: str, replicas: int = 1, ready: int = 1, generation: int = 2, image: str = "img:1"
) -> Any:
    """A Deployment at revision REVISION with the status fields rollouts look at."""
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(
            name=name,
            generation=generation,
            annotations={"deployment.kubernetes.io/revision": REVISION},
        ),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=component_labels(name)),
            template=k8s.V1PodTemplateSpec(
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name=name, image=image)])
            ),
        ),
        status=k8s.V1DeploymentStatus(
            observed_generation=generation,
            replicas=replicas,
            updated_replicas=ready,
            ready_replicas=ready,
            available_replicas=ready,
        ),
    )


def replica_set(deployment: str, revision: str, template_hash: str) -> Any:
    return k8s.V1ReplicaSet(
        metadata=k8s.V1ObjectMeta(
            name=f"{deployment}-{template_hash}",
            labels={**component_labels(deployment), "pod-template-hash": template_hash},
            annotations={"deployment.kubernetes.io/revision": revision},
            owner_references=[
                k8s.V1OwnerReference(
                    api_version="apps/v1", kind="Deployment", name=deployment, uid=deployment
                )
            ],
        ),
        spec=k8s.V1ReplicaSetSpec(selector=k8s.V1LabelSelector()),
    )


class FakeRollouts(FakeApps):
    """FakeApps that also answers reads of workloads, with status from a dict (name -> ready).

    Each Deployment has an old (revision 1) and a new (REVISION) ReplicaSet; StatefulSets are at
    update revision `<name>-2`. IMAGE is what the Deployments' pods run.
    """

    def __init__(self, ready: dict[str, int], image: str = "img:1") -> None:
        super().__init__(tuple(ready), ())
        self.ready = ready
        self.image = image
        self.may_list_replica_sets = True

    def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
        if name not in self.ready:
            raise _missing("deployment", name)
        return workload(name, ready=self.ready[name], image=self.image)

    def list_namespaced_replica_set(self, namespace: str, label_selector: str = "") -> Any:
        if not self.may_list_replica_sets:
            raise forbidden("cannot list resource replicasets in API group apps")
        sets = [
            replica_set(name, revision, template_hash)
            for name in self.ready
            for revision, template_hash in (("1", OLD_HASH), (REVISION, NEW_HASH))
        ]
        return k8s.V1ReplicaSetList(
            items=[rs for rs in sets if matches(rs.metadata.labels, label_selector)]
        )

    def read_namespaced_stateful_set(self, name: str, namespace: str) -> Any:
        ready = self.ready[name]
        return k8s.V1StatefulSet(
            metadata=k8s.V1ObjectMeta(name=name, generation=2),
            spec=k8s.V1StatefulSetSpec(
                replicas=1,
                selector=k8s.V1LabelSelector(match_labels=component_labels(name)),
                service_name=name,
                template={},
            ),
            status=k8s.V1StatefulSetStatus(
                observed_generation=2,
                replicas=1,
                ready_replicas=ready,
                updated_replicas=ready,
                current_revision=f"{name}-{1 + ready}",
                update_revision=f"{name}-2",
            ),
        )


def pod(
    name: str,
    labels: dict[str, str],
    *,
    phase: str = "Pending",
    waiting: str | None = None,
    message: str = "",
    restarts: int = 0,
    unschedulable: str | None = None,
    container: str = "api",
    image: str = "img:1",
) -> Any:
    """A pod as the kubelet/scheduler report it: waiting reason, restarts, PodScheduled."""
    state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason=waiting, message=message) if waiting else None,
        running=None if waiting else k8s.V1ContainerStateRunning(),
    )
    statuses = [
        k8s.V1ContainerStatus(
            name=container,
            ready=False,
            restart_count=restarts,
            image=image,
            image_id="",
            state=state,
        )
    ]
    conditions = (
        [
            k8s.V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message=unschedulable
            )
        ]
        if unschedulable
        else []
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name=container, image=image)]),
        status=k8s.V1PodStatus(
            phase=phase,
            conditions=conditions,
            container_statuses=None if unschedulable else statuses,
        ),
    )


def new_pod_labels(deployment: str) -> dict[str, str]:
    """Labels of a pod of FakeRollouts' newest ReplicaSet of DEPLOYMENT."""
    return {**component_labels(deployment), "pod-template-hash": NEW_HASH}


def old_pod_labels(deployment: str) -> dict[str, str]:
    return {**component_labels(deployment), "pod-template-hash": OLD_HASH}


class FakeBatch:
    """BatchV1Api subset: Jobs with a final state (`Complete` / `Failed` / None = running).

    A Job's pod template is immutable: a patch that changes spec.template answers 422, as the
    API server does. ON_CREATE(name, body) may return the state of a newly created Job (and,
    e.g., add its pod to a FakeCore).
    """

    def __init__(
        self,
        states: dict[str, str | None] | None = None,
        on_create: Callable[[str, dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.states = dict(states or {})
        self.bodies: dict[str, dict[str, Any]] = {}
        self.on_create = on_create
        self.created: list[str] = []
        self.deleted: list[str] = []

    def read_namespaced_job(self, name: str, namespace: str) -> Any:
        if name not in self.states:
            raise _missing("job", name)
        state = self.states[name]
        conditions = [k8s.V1JobCondition(type=state, status="True")] if state else []
        return k8s.V1Job(
            metadata=k8s.V1ObjectMeta(name=name), status=k8s.V1JobStatus(conditions=conditions)
        )

    def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> Any:
        name = body["metadata"]["name"]
        if name in self.states:
            raise ApiException(status=409, reason="AlreadyExists")
        self.created.append(name)
        self.bodies[name] = copy.deepcopy(body)
        self.states[name] = self.on_create(name, body) if self.on_create else None
        return body

    def patch_namespaced_job(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        if name not in self.states:
            raise _missing("job", name)
        template = body.get("spec", {}).get("template")
        if template is not None and template != self.bodies.get(name, {}).get("spec", {}).get(
            "template"
        ):
            raise ApiException(
                status=422,
                reason=f'Invalid: Job.batch "{name}" is invalid: spec.template: field is immutable',
            )
        return body

    def delete_namespaced_job(self, name: str, namespace: str, **kw: Any) -> None:
        if name not in self.states:
            raise _missing("job", name)
        self.deleted.append(name)
        self.states.pop(name, None)


class FakeDiscovery:
    """CustomObjectsApi.get_api_resources: a group/version is served from call SERVED_FROM on.

    Before that (or always, with None) the answer is 404, as for a CRD not installed yet.
    """

    def __init__(self, served: dict[tuple[str, str], list[str]], served_from: int | None = 1):
        self.served, self.served_from, self.calls = served, served_from, 0

    def get_api_resources(self, group: str, version: str) -> Any:
        self.calls += 1
        if (
            self.served_from is None
            or self.calls < self.served_from
            or (group, version) not in self.served
        ):
            raise _missing("the server could not find the requested resource", group)
        return k8s.V1APIResourceList(
            group_version=f"{group}/{version}",
            resources=[
                k8s.V1APIResource(
                    kind=kind, name=kind.lower() + "s", namespaced=True, singular_name="", verbs=[]
                )
                for kind in self.served[(group, version)]
            ],
        )


TRAEFIK_SERVED = {("traefik.io", "v1alpha1"): ["Middleware", "IngressRoute"]}


class FakeStorage:
    """StorageV1Api.list_storage_class: a default class from call DEFAULT_FROM on (None: never);
    ALLOWED=False answers 403 as for a user bound only inside a namespace."""

    def __init__(self, default_from: int | None = 1, allowed: bool = True) -> None:
        self.default_from, self.allowed, self.calls = default_from, allowed, 0

    def list_storage_class(self) -> Any:
        self.calls += 1
        if not self.allowed:
            raise forbidden("cannot list resource storageclasses at the cluster scope")
        items = []
        if self.default_from is not None and self.calls >= self.default_from:
            items.append(
                k8s.V1StorageClass(
                    metadata=k8s.V1ObjectMeta(
                        name="local-path",
                        annotations={"storageclass.kubernetes.io/is-default-class": "true"},
                    ),
                    provisioner="rancher.io/local-path",
                )
            )
        return k8s.V1StorageClassList(items=items)
