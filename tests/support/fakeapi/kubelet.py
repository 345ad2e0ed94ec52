"""What controllers and kubelets would write, for the fake API server (pods simulated).

Switched on with `Kubelet(server)`: after every write of a Deployment, StatefulSet or Job it
writes what kube-controller-manager and a kubelet would, at once:
- Deployment: a ReplicaSet per pod template (`<name>-<hash>`, labels `pod-template-hash`,
  annotation `deployment.kubernetes.io/revision`), the pods of the current one (old ones go),
  and the Deployment's status (observedGeneration, replicas, updated/ready/available);
- StatefulSet: pods `<name>-<i>` with `controller-revision-hash`, current/update revision and
  ready replicas;
- Job: one pod (`job-name` label) that succeeds, fails or keeps running, and the Job's
  conditions (Complete / Failed).
How pods behave is set per component or Job name prefix (`Behaviour`): ready, or stuck in a
waiting state (CrashLoopBackOff, ImagePullBackOff, ...), or unschedulable; their log text;
the image ID the kubelet reports per image (by default a registry digest of the reference).
Pods are admitted like Pod Security `restricted` does in namespaces that enforce it: a template
that violates it gets no pod (a FailedCreate event on its owner), as on a real cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from support.fakeapi.kinds import BY_KIND, Kind
from support.fakeapi.server import FakeApiServer, digest_of, now, timestamp

COMPONENT = "app.kubernetes.io/component"
REVISION = "deployment.kubernetes.io/revision"
ENFORCE = "pod-security.kubernetes.io/enforce"


@dataclass
class Behaviour:
    """How the pods of one component (or Job) behave."""

    ready: bool = True
    waiting: str = ""  # a waiting reason: CrashLoopBackOff, ImagePullBackOff, ...
    restarts: int = 0
    unschedulable: bool = False
    job: str = "succeed"  # for Jobs: succeed | fail | run
    logs: str = ""  # what every container of its pods wrote


@dataclass
class Kubelet:
    """The simulated controllers of one fake API server."""

    server: FakeApiServer
    behaviours: dict[str, Behaviour] = field(default_factory=dict)  # component or Job prefix
    image_ids: dict[str, str] = field(default_factory=dict)  # image reference -> imageID
    node: str = "node-1"

    def __post_init__(self) -> None:
        self.server.after_write.append(self._written)

    # --- configuration ----------------------------------------------------------------------

    def behave(self, name: str, **how: Any) -> Behaviour:
        """Set how the pods of component (or Job name prefix) NAME behave."""
        self.behaviours[name] = Behaviour(**how)
        return self.behaviours[name]

    def behaviour(self, component: str, job: str = "") -> Behaviour:
        for prefix, how in self.behaviours.items():
            if job and job.startswith(prefix):
                return how
        return self.behaviours.get(component, Behaviour())

    def image_id(self, image: str) -> str:
        if image in self.image_ids:
            return self.image_ids[image]
        if "@sha256:" in image:
            return image
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        return f"{repository}@{digest_of(image)}"

    # --- reactions --------------------------------------------------------------------------

    def _written(self, server: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.kind == "Deployment":
            self._deployment(obj)
        elif kind.kind == "StatefulSet":
            self._statefulset(obj)
        elif kind.kind == "Job" and "status" not in obj:
            self._job(obj)

    def _owner(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }

    def _deployment(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        namespace, name = meta["namespace"], meta["name"]
        template = spec["template"]
        template_hash = _hash(template)[:10]
        sets = [
            rs
            for rs in self.server.all("ReplicaSet", namespace)
            if any(
                ref.get("uid") == meta["uid"] for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]
        current = next(
            (rs for rs in sets if rs["metadata"]["name"] == f"{name}-{template_hash}"), None
        )
        revisions = [int(rs["metadata"]["annotations"].get(REVISION, "0")) for rs in sets]
        revision = (
            current["metadata"]["annotations"][REVISION]
            if current
            else str(max(revisions, default=0) + 1)
        )
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": template_hash}
        replicas = spec.get("replicas", 1)
        if current is None:
            current = self.server.put(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": f"{name}-{template_hash}",
                        "namespace": namespace,
                        "labels": labels,
                        "annotations": {REVISION: revision},
                        "ownerReferences": [self._owner(obj)],
                    },
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": labels},
                        "template": template,
                    },
                }
            )
        for rs in sets:
            if rs["metadata"]["name"] != current["metadata"]["name"]:
                for pod in self._pods_of(rs):
                    self.server.remove("Pod", pod["metadata"]["name"], namespace)
        pods = self._pods_of(current)
        how = self.behaviour(template["metadata"].get("labels", {}).get(COMPONENT, name))
        admitted = True
        for index in range(len(pods), replicas):
            admitted = (
                self._pod(
                    f"{current['metadata']['name']}-{index}",
                    namespace,
                    template,
                    labels,
                    current,
                    how,
                )
                and admitted
            )
        for pod in pods[replicas:]:
            self.server.remove("Pod", pod["metadata"]["name"], namespace)
        ready = replicas if (how.ready and not how.waiting and admitted) else 0
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas if admitted else 0,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if ready == replicas:
            status["conditions"] = [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
        self._set_status(obj, status, annotations={REVISION: revision})

    def _statefulset(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        namespace, name = meta["namespace"], meta["name"]
        revision = f"{name}-{_hash(spec['template'])[:10]}"
        template_labels = spec["template"]["metadata"].get("labels", {})
        labels = {**template_labels, "controller-revision-hash": revision}
        replicas = spec.get("replicas", 1)
        how = self.behaviour(spec["template"]["metadata"].get("labels", {}).get(COMPONENT, name))
        admitted = True
        for index in range(replicas):
            pod = self.server.get("Pod", f"{name}-{index}", namespace)
            if (
                pod is not None
                and pod["metadata"]["labels"].get("controller-revision-hash") == revision
            ):
                continue
            if pod is not None:
                self.server.remove("Pod", f"{name}-{index}", namespace)
            admitted = (
                self._pod(f"{name}-{index}", namespace, spec["template"], labels, obj, how)
                and admitted
            )
        ready = replicas if (how.ready and not how.waiting and admitted) else 0
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas if admitted else 0,
            "readyReplicas": ready,
            "currentReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
        }
        self._set_status(obj, status)

    def _job(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        namespace, name = meta["namespace"], meta["name"]
        template = spec["template"]
        component = template["metadata"].get("labels", {}).get(COMPONENT, "")
        how = self.behaviour(component, name)
        labels = {**template["metadata"].get("labels", {}), "job-name": name}
        pod_name = f"{name}-{_hash(name)[:5]}"
        if not self._pod(pod_name, namespace, template, labels, obj, how, job=True):
            self._set_status(obj, {"active": 0})
            return
        if how.job == "run":
            self._set_status(obj, {"active": 1})
            return
        done = how.job == "succeed"
        condition = {"type": "Complete" if done else "Failed", "status": "True"}
        if not done:
            condition["reason"] = "BackoffLimitExceeded"
        self._set_status(obj, {"succeeded" if done else "failed": 1, "conditions": [condition]})

    # --- pods -------------------------------------------------------------------------------

    def _pods_of(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return [
            pod
            for pod in self.server.all("Pod", owner["metadata"]["namespace"])
            if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences", []))
        ]

    def _pod(
        self,
        name: str,
        namespace: str,
        template: dict[str, Any],
        labels: dict[str, str],
        owner: dict[str, Any],
        how: Behaviour,
        job: bool = False,
    ) -> bool:
        """Start one pod of TEMPLATE; False when Pod Security refuses it (an event says why)."""
        spec = copy.deepcopy(template["spec"])
        ns = self.server.get("Namespace", namespace) or {}
        if (ns.get("metadata", {}).get("labels") or {}).get(ENFORCE) == "restricted":
            problems = restricted_violations(spec)
            if problems:
                self.event(
                    owner["metadata"]["name"],
                    namespace,
                    "FailedCreate",
                    f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest"'
                    f": {'; '.join(problems)}",
                    "Warning",
                )
                return False
        spec["nodeName"] = self.node
        phase = "Pending" if how.unschedulable else "Running"
        if job and how.job in ("succeed", "fail") and not how.waiting and not how.unschedulable:
            phase = "Succeeded" if how.job == "succeed" else "Failed"
        statuses = [self._container(c, how, phase) for c in spec["containers"]]
        inits = [
            self._container(c, Behaviour(), "Succeeded") for c in spec.get("initContainers", [])
        ]
        conditions = []
        if how.unschedulable:
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient memory.",
                }
            )
        else:
            ready = phase == "Running" and how.ready and not how.waiting
            conditions += [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [self._owner(owner)],
            },
            "spec": spec,
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [] if how.unschedulable else statuses,
                "initContainerStatuses": [] if how.unschedulable else inits,
                "startTime": timestamp(now()),
            },
        }
        self.server.seed(pod)
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if how.logs:
                self.server.logs[(namespace, name, container["name"])] = how.logs
        if how.waiting:
            self.event(name, namespace, "BackOff", f"{how.waiting}: container keeps failing")
        return True

    def _container(self, container: dict[str, Any], how: Behaviour, phase: str) -> dict[str, Any]:
        image = container.get("image", "")
        status: dict[str, Any] = {
            "name": container["name"],
            "image": image,
            "imageID": ""
            if how.waiting in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
            else self.image_id(image),
            "ready": phase == "Running" and how.ready and not how.waiting,
            "restartCount": how.restarts,
        }
        if how.waiting:
            status["state"] = {"waiting": {"reason": how.waiting, "message": how.waiting}}
        elif phase in ("Succeeded", "Failed"):
            code = 0 if phase == "Succeeded" else 1
            status["state"] = {
                "terminated": {"exitCode": code, "reason": "Completed" if not code else "Error"}
            }
        else:
            status["state"] = {"running": {"startedAt": timestamp(now())}}
        return status

    def event(
        self, involved: str, namespace: str, reason: str, message: str, kind: str = "Warning"
    ) -> None:
        """Record an event about object INVOLVED (what `describe` shows)."""
        stamp = timestamp(now())
        self.server.seed(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{involved}.{_hash(reason + message)[:8]}",
                    "namespace": namespace,
                },
                "involvedObject": {"name": involved, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": kind,
                "lastTimestamp": stamp,
            }
        )

    def _set_status(
        self, obj: dict[str, Any], status: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> None:
        meta = obj["metadata"]
        kind = BY_KIND[(obj["apiVersion"], obj["kind"])]
        key = FakeApiServer.key(kind, meta["namespace"], meta["name"])
        stored = self.server.objects.get(key)
        if stored is None:
            return
        stored["status"] = status
        if annotations:
            stored["metadata"].setdefault("annotations", {}).update(annotations)


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What Pod Security `restricted` refuses in a pod spec (the checks our manifests meet)."""
    problems = []
    pod_context = spec.get("securityContext") or {}
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        context = container.get("securityContext") or {}
        name = container.get("name", "?")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f'allowPrivilegeEscalation != false (container "{name}")')
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f'unrestricted capabilities (container "{name}")')
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f'runAsNonRoot != true (container "{name}")')
        seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f'seccompProfile (container "{name}")')
    return problems
