"""A bigger in-memory stand-in for one namespace of a cluster: what status, logs, backup/restore
and `doctor --env` read (built on fake_kube's API fakes, which stay as they are).

Pods are listed with real label-selector matching (`k=v` and `k in (a,b)`), Deployments and
StatefulSets carry a real pod template, and `ScalingContext` (a MockContext) applies what the
recorded `kubectl scale` / `kubectl apply` / `kubectl delete pod` commands would do, so the
waits after them see the cluster change. Not a cluster: nothing here runs Kubernetes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from invoke import MockContext, Result
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import Kube
from desbordante_ops.cluster.rollout import JOB_NAME_LABEL
from support.fake_kube import FakeCore

NAMESPACE = "desbordante-stage"
IMAGE = "ghcr.io/desbordante/desbordante-backend"
TAG = "v1.4.0"
DIGEST = "sha256:" + "ab" * 32
API_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: names.API}},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "initContainers": [{"name": "wait-for-schema", "image": f"{IMAGE}:{TAG}"}],
        "containers": [
            {
                "name": "api",
                "image": f"{IMAGE}:{TAG}",
                "envFrom": [{"configMapRef": {"name": "desbordante-config-h4sh"}}],
                "env": [{"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/x/password"}],
                "securityContext": {"readOnlyRootFilesystem": True},
                "volumeMounts": [
                    {"name": "uploads", "mountPath": "/data/uploads"},
                    {"name": "secrets", "mountPath": "/run/secrets/desbordante"},
                ],
            }
        ],
        "volumes": [
            {"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}},
            {"name": "secrets", "projected": {"sources": []}},
        ],
    },
}


def labels(component: str) -> dict[str, str]:
    return {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: component}


def matches(selector: str, found: dict[str, str]) -> bool:
    """Label selector matching for `k=v` and `k in (a,b)` terms, comma-separated."""
    for term in re.split(r",(?![^()]*\))", selector) if selector else []:
        if " in (" in term:
            key, _, values = term.partition(" in (")
            if found.get(key.strip()) not in values.rstrip(")").split(","):
                return False
        else:
            key, _, value = term.partition("=")
            if found.get(key) != value:
                return False
    return True


def pod(
    name: str,
    component: str,
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    waiting: str | None = None,
    claim: tuple[str, str] | None = None,
    image: str = f"{IMAGE}:{TAG}",
) -> Any:
    """A pod of COMPONENT; CLAIM = (claim name, mount path) mounted by its main container."""
    volumes, mounts = [], []
    if claim:
        volumes = [
            k8s.V1Volume(
                name="data",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=claim[0]
                ),
            )
        ]
        mounts = [k8s.V1VolumeMount(name="data", mount_path=claim[1])]
    state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason=waiting) if waiting else None
    )
    status = k8s.V1ContainerStatus(
        name=component,
        image=image,
        image_id=f"{image.rpartition(':')[0]}@{DIGEST}",
        ready=ready,
        restart_count=restarts,
        state=state,
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace=NAMESPACE, labels=labels(component)),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name=component, volume_mounts=mounts)], volumes=volumes
        ),
        status=k8s.V1PodStatus(phase=phase, container_statuses=[status]),
    )


def healthy_pods() -> list[Any]:
    return [
        pod("api-7d9f-abcde", names.API, claim=("uploads", "/data/uploads")),
        pod("worker-5c4b-fghij", names.WORKER),
        pod("flower-6d5c-klmno", names.FLOWER),
        pod(
            "postgres-0",
            names.POSTGRES,
            claim=("data-postgres-0", "/var/lib/postgresql/data"),
            image="postgres:17.6-bookworm",
        ),
        pod("rabbitmq-0", names.RABBITMQ, image="rabbitmq:4.1.4"),
    ]


class ClusterCore(FakeCore):
    """FakeCore plus selector-aware pod lists, volume claims, nodes and node stats."""

    def __init__(self) -> None:
        super().__init__()
        self.pods = healthy_pods()
        self.claims = [claim("uploads", "2Gi"), claim("data-postgres-0", "2Gi")]
        self.nodes: list[Any] = []
        self.other_pods: list[Any] = []
        self.node_fs: dict[str, dict[str, int]] = {}

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> Any:
        chosen = [p for p in self.pods if matches(label_selector, p.metadata.labels or {})]
        return k8s.V1PodList(items=chosen)

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        for each in self.pods:
            if each.metadata.name == name:
                return each
        raise ApiException(status=404, reason=f"pod {name} not found")

    def list_namespaced_persistent_volume_claim(self, namespace: str) -> Any:
        return k8s.V1PersistentVolumeClaimList(items=list(self.claims))

    def list_node(self) -> Any:
        return k8s.V1NodeList(items=list(self.nodes))

    def list_pod_for_all_namespaces(self) -> Any:
        return k8s.V1PodList(items=[*self.pods, *self.other_pods])

    def connect_get_node_proxy_with_path(self, name: str, path: str, **kw: Any) -> Any:
        if name not in self.node_fs:
            raise ApiException(status=403, reason="nodes/proxy is forbidden")
        body = json.dumps({"node": {"fs": self.node_fs[name]}}).encode()
        return type("Response", (), {"data": body})()


def claim(name: str, size: str, phase: str = "Bound") -> Any:
    return k8s.V1PersistentVolumeClaim(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PersistentVolumeClaimSpec(
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": size})
        ),
        status=k8s.V1PersistentVolumeClaimStatus(
            phase=phase, capacity={"storage": size} if phase == "Bound" else None
        ),
    )


@dataclass
class Workload:
    kind: str
    name: str
    replicas: int = 1
    ready: int = 1


class ClusterApps:
    """AppsV1Api subset: lists and reads of the stack's workloads, with the api pod template."""

    def __init__(self, core: ClusterCore) -> None:
        self.core = core
        self.workloads = {name: Workload("Deployment", name) for name in names.DEPLOYMENTS} | {
            name: Workload("StatefulSet", name) for name in names.STATEFULSETS
        }
        self.traefik: Any = None

    def _object(self, item: Workload) -> Any:
        meta = k8s.V1ObjectMeta(name=item.name, generation=2)
        template = API_TEMPLATE if item.name == names.API else {}
        if item.kind == "Deployment":
            return k8s.V1Deployment(
                metadata=meta,
                spec=k8s.V1DeploymentSpec(
                    replicas=item.replicas, selector=k8s.V1LabelSelector(), template=template
                ),
                status=k8s.V1DeploymentStatus(
                    observed_generation=2,
                    replicas=item.ready,
                    updated_replicas=item.ready,
                    ready_replicas=item.ready,
                    available_replicas=item.ready,
                ),
            )
        return k8s.V1StatefulSet(
            metadata=meta,
            spec=k8s.V1StatefulSetSpec(
                replicas=item.replicas,
                selector=k8s.V1LabelSelector(),
                service_name=item.name,
                template={},
            ),
            status=k8s.V1StatefulSetStatus(
                observed_generation=2,
                replicas=item.ready,
                ready_replicas=item.ready,
                updated_replicas=item.ready,
                current_revision="r1",
                update_revision="r1",
            ),
        )

    def _read(self, kind: str, name: str) -> Any:
        item = self.workloads.get(name)
        if item is None or item.kind != kind:
            raise ApiException(status=404, reason=f"{kind} {name} not found")
        return self._object(item)

    def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
        if namespace == names.INGRESS_CONTROLLER_NAMESPACE:
            if self.traefik is None:
                raise ApiException(status=404, reason="traefik not found")
            return self.traefik
        return self._read("Deployment", name)

    def read_namespaced_stateful_set(self, name: str, namespace: str) -> Any:
        return self._read("StatefulSet", name)

    def list_namespaced_deployment(self, namespace: str) -> Any:
        return k8s.V1DeploymentList(
            items=[self._object(w) for w in self.workloads.values() if w.kind == "Deployment"]
        )

    def list_namespaced_stateful_set(self, namespace: str) -> Any:
        return k8s.V1StatefulSetList(
            items=[self._object(w) for w in self.workloads.values() if w.kind == "StatefulSet"]
        )

    def scale(self, name: str, replicas: int) -> None:
        """What the Deployment controller would do: pods and readiness follow the replicas."""
        self.workloads[name].replicas = self.workloads[name].ready = replicas
        self.core.pods = [
            p for p in self.core.pods if p.metadata.labels[names.COMPONENT_LABEL] != name
        ]
        claim_ = ("uploads", "/data/uploads") if name == names.API else None
        self.core.pods += [pod(f"{name}-new-{i}", name, claim=claim_) for i in range(replicas)]


class Networking:
    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts

    def list_namespaced_ingress(self, namespace: str) -> Any:
        return k8s.V1IngressList(
            items=[
                k8s.V1Ingress(
                    metadata=k8s.V1ObjectMeta(name=name),
                    spec=k8s.V1IngressSpec(rules=[k8s.V1IngressRule(host=host)]),
                )
                for name, host in self.hosts.items()
            ]
        )


HOST = "https://127.0.0.1:6443"


def fake_cluster() -> Kube:
    """A Kube whose core and apps are ClusterCore / ClusterApps (and whose host is HOST)."""
    core = ClusterCore()
    client = SimpleNamespace(configuration=SimpleNamespace(host=HOST))
    return Kube(api_client=client, core=core, apps=ClusterApps(core), batch=None, rbac=None)


class ScalingContext(MockContext):
    """Records every command; applies `kubectl patch` (replicas), `apply -f` (a Job: its pod
    appears) and `delete job` to the fake cluster; answers with RESULTS (regex -> Result) or
    success.
    A command ending in `> PATH` (the shell's redirection) writes OUTPUTS[regex] to PATH."""

    _k: Kube
    _results: dict[str, Result]
    _outputs: dict[str, bytes]
    _commands: list[str]
    _applied: list[dict[str, Any]]

    def __init__(
        self,
        k: Kube,
        results: dict[str, Result] | None = None,
        outputs: dict[str, bytes] | None = None,
    ) -> None:
        super().__init__()
        # object.__setattr__: Invoke's Context keeps attributes it does not know in its config.
        own = {"_k": k, "_results": results or {}, "_outputs": outputs or {}}
        for name, value in {**own, "_commands": [], "_applied": []}.items():
            object.__setattr__(self, name, value)

    @property
    def commands(self) -> list[str]:
        """Every command run so far, in order."""
        return self._commands

    @property
    def applied(self) -> list[dict[str, Any]]:
        """Every object `kubectl apply -f` was given."""
        return self._applied

    def run(self, command: str, **kw: Any) -> Result:
        self._commands.append(command)
        apps: ClusterApps = self._k.apps
        core: ClusterCore = self._k.core
        patched = re.search(r" patch deployment/(\w+) .*\"replicas\": (\d+)", command)
        if patched:
            apps.scale(patched.group(1), int(patched.group(2)))
        elif " apply -f " in command:
            with open(command.split()[-1], encoding="utf-8") as handle:
                docs = [doc for doc in yaml.safe_load_all(handle) if doc]
            self._applied += docs
            for doc in docs:  # the Job controller makes the Job's pod
                helper = pod(f"{doc['metadata']['name']}-x7k2p", names.MIGRATE)
                helper.metadata.labels[JOB_NAME_LABEL] = doc["metadata"]["name"]
                core.pods.append(helper)
        elif " delete job " in command:
            name = command.split(" delete job ")[1].split()[0]
            core.pods = [p for p in core.pods if p.metadata.labels.get(JOB_NAME_LABEL) != name]
        redirect = re.search(r" > (\S+)$", command)
        if redirect:
            data = next((v for k, v in self._outputs.items() if re.search(k, command)), b"")
            Path(shlex.split(redirect.group(1))[0]).write_bytes(data)
        for pattern, result in self._results.items():
            if re.search(pattern, command):
                return result
        return Result(command=command, exited=0)
