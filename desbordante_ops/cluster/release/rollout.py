"""Waiting for a release to come up, failing fast when a pod cannot start, and saying why.

Every wait goes through `watch`: `core.poll` (bounded in time and count) plus
`core.console.tracker` (bars on a terminal, one line per change elsewhere), under one
`Deadline` shared by the whole deploy. While it waits it looks at the pods of the *current*
revision of each workload (the newest ReplicaSet of a Deployment, the update revision of a
StatefulSet, the pods of a Job) and stops early on states that do not fix themselves:
Unschedulable, ErrImagePull/ImagePullBackOff, CreateContainerConfigError (after
STUCK_GRACE_SECONDS, so a node that is still starting or a pull that fails once is not fatal),
InvalidImageName (at once) and CrashLoopBackOff (at CRASH_RESTARTS restarts). Old pods that
crash-loop while a fix rolls out are not judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.core.console import console, fail, tracker, warn
from desbordante_ops.core.poll import poll

POLL_SECONDS = 2.0
LOG_TAIL_LINES = 30
EVENTS_PER_POD = 10
# How long a pod may stay unschedulable, unable to pull or to start before the wait stops.
STUCK_GRACE_SECONDS = 30.0
# Restarts after which a crash-looping container is a failed rollout.
CRASH_RESTARTS = 3
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"
STS_REVISION_LABEL = "controller-revision-hash"
JOB_NAME_LABEL = "job-name"
FORBIDDEN = 403  # what the API answers when RBAC denies a request

IMAGE_HINT = (
    "The node cannot get the image: load it into k3s (`invoke images.load`) or push it "
    "(`invoke images.push`); for a private registry set REGISTRY_USERNAME and "
    "REGISTRY_PASSWORD so deploy creates the pull secret."
)
HINTS = {
    "Unschedulable": (
        "The scheduler cannot place it: free memory/CPU on the node or lower the requests or "
        "replicas (API_REPLICAS, WORKER_REPLICAS)."
    ),
    "ImagePull": IMAGE_HINT,
    "InvalidImageName": "Fix IMAGE_NAME or the tag: the image reference is not valid.",
    "CreateContainerConfigError": (
        "A ConfigMap or Secret key it needs is missing: check `invoke secrets.list` and "
        "run `invoke secrets.generate` for the environment."
    ),
    "CrashLoopBackOff": "It keeps crashing: its events and last log lines are above.",
}


class Clock(Protocol):
    """Time as the waits see it (tests pass a clock that moves only when a wait sleeps)."""

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> float: ...


class SystemClock:
    """Real time: `time.sleep` and `time.monotonic`."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class Deadline:
    """One time budget shared by every wait of a deploy (`--timeout`)."""

    clock: Clock
    end: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, clock: Clock | None = None) -> Deadline:
        clock = clock or SystemClock()
        return cls(clock, clock.now() + seconds, seconds)

    def left(self) -> float:
        return max(self.end - self.clock.now(), 0.0)


@dataclass
class Rollout:
    """Progress of one thing a wait is waiting for (a workload, a Job, a prerequisite)."""

    kind: str
    name: str
    desired: int
    ready: int
    done: bool
    problem: str = ""  # a state that ends the wait (e.g. progress deadline exceeded)
    note: str = ""  # shown with the progress, does not end the wait
    pods: str = ""  # label selector of the pods of its current revision ("" = none to judge)

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass(frozen=True)
class Blocker:
    """A pod state that will not fix itself (after GRACE seconds)."""

    pod: str
    reason: str
    detail: str
    group: str
    grace: float

    @property
    def message(self) -> str:
        detail = " ".join(self.detail.split())
        shown = f"{self.reason} ({detail})" if detail else self.reason
        return f"Pod {self.pod} cannot start: {shown}. {HINTS[self.group]}"


@dataclass
class Snapshot:
    """What one look at the cluster found."""

    items: list[Rollout]
    done: bool
    pods: list[str] = field(default_factory=list)  # selectors of the pods to judge


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _observed(obj: k8s.V1Deployment | k8s.V1StatefulSet) -> bool:
    return (obj.status.observed_generation or 0) >= (obj.metadata.generation or 0)


def rollout_of(kind: str, obj: k8s.V1Deployment | k8s.V1StatefulSet) -> Rollout:
    """How far the rollout of a Deployment or StatefulSet object is."""
    spec, status, meta = obj.spec, obj.status, obj.metadata
    desired = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    ready = status.ready_replicas or 0
    observed = _observed(obj)
    if kind == "Deployment":
        available = status.available_replicas or 0
        total = status.replicas or 0
        done = observed and updated == desired and available == desired and total == desired
        problem = ""
        for cond in status.conditions or []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                problem = "progress deadline exceeded"
        return Rollout(kind, meta.name, desired, min(updated, available), done, problem)
    revision_ok = (
        status.update_revision is None or status.current_revision == status.update_revision
    )
    done = observed and updated == desired and ready == desired and revision_ok
    return Rollout(kind, meta.name, desired, min(updated, ready), done)


def deployment_pods(k: Kube, namespace: str, obj: k8s.V1Deployment) -> str:
    """Selector of the pods of the Deployment's newest ReplicaSet ("" until it exists, or when
    this kubeconfig may not list ReplicaSets)."""
    labels = dict(obj.spec.selector.match_labels or {})
    revision = (obj.metadata.annotations or {}).get(REVISION_ANNOTATION)
    if not _observed(obj) or not revision or not labels:
        return ""
    try:
        sets = k.apps.list_namespaced_replica_set(namespace, label_selector=_selector(labels)).items
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        return ""  # may not read ReplicaSets: its pods are not judged (the wait still ends)
    for rs in sets:
        owners = {(ref.kind, ref.name) for ref in rs.metadata.owner_references or []}
        template_hash = (rs.metadata.labels or {}).get(TEMPLATE_HASH_LABEL)
        if (
            ("Deployment", obj.metadata.name) in owners
            and (rs.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision
            and template_hash
        ):
            return _selector({**labels, TEMPLATE_HASH_LABEL: template_hash})
    return ""


def statefulset_pods(obj: k8s.V1StatefulSet) -> str:
    """Selector of the pods of the StatefulSet's update revision ("" until it is known)."""
    labels = dict(obj.spec.selector.match_labels or {})
    revision = obj.status.update_revision
    if not _observed(obj) or not revision or not labels:
        return ""
    return _selector({**labels, STS_REVISION_LABEL: revision})


def rollouts(k: Kube, namespace: str) -> list[Rollout]:
    """Every workload's rollout; the unfinished ones name the pods of their current revision."""
    items = []
    for name in names.DEPLOYMENTS:
        obj = k.apps.read_namespaced_deployment(name, namespace)
        item = rollout_of("Deployment", obj)
        item.pods = "" if item.done else deployment_pods(k, namespace, obj)
        items.append(item)
    for name in names.STATEFULSETS:
        obj = k.apps.read_namespaced_stateful_set(name, namespace)
        item = rollout_of("StatefulSet", obj)
        item.pods = "" if item.done else statefulset_pods(obj)
        items.append(item)
    return items


def _waiting_blocker(pod: str, status: k8s.V1ContainerStatus) -> Blocker | None:
    waiting = status.state.waiting if status.state else None
    reason = waiting.reason if waiting else None
    detail = (waiting.message or "") if waiting else ""
    image = f"image {status.image}" + (f": {detail}" if detail else "") if status.image else detail
    if reason == "InvalidImageName":
        return Blocker(pod, reason, image, reason, 0.0)
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        return Blocker(pod, reason, image, "ImagePull", STUCK_GRACE_SECONDS)
    if reason == "CreateContainerConfigError":
        return Blocker(pod, reason, detail, reason, STUCK_GRACE_SECONDS)
    if reason == "CrashLoopBackOff" and (status.restart_count or 0) >= CRASH_RESTARTS:
        restarts = f"container {status.name} restarted {status.restart_count} times"
        return Blocker(pod, reason, restarts, reason, 0.0)
    return None


def pod_blockers(pod: k8s.V1Pod) -> list[Blocker]:
    """The states of POD that will not fix themselves (empty for a pod that may still start)."""
    name = pod.metadata.name
    if pod.metadata.deletion_timestamp is not None or pod.status is None:
        return []
    found = [
        Blocker(name, "Unschedulable", cond.message or "", "Unschedulable", STUCK_GRACE_SECONDS)
        for cond in pod.status.conditions or []
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable"
    ]
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    found += [b for b in (_waiting_blocker(name, s) for s in statuses) if b is not None]
    return found


class Stuck:
    """Blockers seen continuously for their grace period (first sighting per pod and cause)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.first_seen: dict[tuple[str, str], float] = {}

    def confirmed(self, blockers: Iterable[Blocker]) -> Blocker | None:
        now, current = self.clock.now(), list(blockers)
        self.first_seen = {
            (b.pod, b.group): self.first_seen.get((b.pod, b.group), now) for b in current
        }
        for blocker in current:
            if now - self.first_seen[(blocker.pod, blocker.group)] >= blocker.grace:
                return blocker
        return None


def watch(
    k: Kube, namespace: str, check: Callable[[], Snapshot], deadline: Deadline
) -> tuple[Snapshot, Blocker | None]:
    """Poll CHECK with progress until done, a problem, a confirmed blocker or the deadline."""
    stuck = Stuck(deadline.clock)
    with tracker() as track:

        def look() -> tuple[Snapshot, Blocker | None]:
            snap = check()
            for item in snap.items:
                completed = item.desired if item.done else item.ready
                extra = item.problem or item.note
                detail = f"{item.label} {completed}/{item.desired}" + (
                    f" ({extra})" if extra else ""
                )
                track.update(item.label, detail, completed, max(item.desired, 1))
            pods = [
                pod
                for selector in snap.pods
                for pod in k.core.list_namespaced_pod(namespace, label_selector=selector).items
            ]
            return snap, stuck.confirmed(b for pod in pods for b in pod_blockers(pod))

        return poll(
            look,
            lambda r: r[0].done or r[1] is not None or any(i.problem for i in r[0].items),
            deadline.left(),
            POLL_SECONDS,
            sleep=deadline.clock.sleep,
        )


def job_state(k: Kube, namespace: str, name: str) -> str:
    """`missing`, `running`, `succeeded` or `failed`."""
    job = read_or_none(k.batch.read_namespaced_job, name, namespace)
    if job is None:
        return "missing"
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return "succeeded" if cond.type == "Complete" else "failed"
    return "running"


def wait_job(k: Kube, namespace: str, name: str, deadline: Deadline) -> tuple[str, Blocker | None]:
    """Wait for Job NAME to finish; (its state, a blocker of one of its pods or None)."""

    def check() -> Snapshot:
        state = job_state(k, namespace, name)
        done = state == "succeeded"
        item = Rollout("Job", name, 1, int(done), done)
        return Snapshot([item], state in ("succeeded", "failed"), [f"{JOB_NAME_LABEL}={name}"])

    _, blocker = watch(k, namespace, check, deadline)
    return job_state(k, namespace, name), blocker


def wait_rollouts(
    k: Kube, namespace: str, deadline: Deadline
) -> tuple[list[Rollout], Blocker | None]:
    """Wait for every rollout; (the unfinished ones, a blocker of a current pod or None)."""

    def check() -> Snapshot:
        state = rollouts(k, namespace)
        return Snapshot(
            state, all(i.done for i in state), [i.pods for i in state if i.pods and not i.done]
        )

    snap, blocker = watch(k, namespace, check, deadline)
    return [item for item in snap.items if not item.done], blocker


def failing_pods(
    core: k8s.CoreV1Api, namespace: str, selector: str | None = None
) -> list[k8s.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector or "").items
    bad = []
    for pod in pods:
        phase = pod.status.phase if pod.status else None
        statuses = (pod.status.container_statuses or []) if pod.status else []
        if phase == "Succeeded":
            continue
        if phase != "Running" or not all(s.ready for s in statuses):
            bad.append(pod)
    return bad


def pod_log(
    core: k8s.CoreV1Api, namespace: str, pod: str, container: str, lines: int = LOG_TAIL_LINES
) -> str | None:
    """The last LINES log lines of one container; None when there are none (204 No Content,
    empty, not started, not readable).

    Read undecoded and decoded here: for a text answer the kubernetes client 36 returns the
    repr of its bytes (`b'...\\n'`, kubernetes-client/python#2596).
    """
    try:
        response = core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=lines, _preload_content=False
        )
    except ApiException:
        return None
    text = bytes(response.data or b"").decode("utf-8", errors="replace")
    return text if text.strip() else None


def job_log_lines(
    core: k8s.CoreV1Api, namespace: str, job: str, container: str, lines: int = LOG_TAIL_LINES
) -> list[str]:
    """The last LINES non-blank log lines of CONTAINER in the first pod of JOB that wrote
    any ([] when none did)."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={job}").items
    for pod in pods:
        text = pod_log(core, namespace, pod.metadata.name, container, lines)
        found = [line for line in (text or "").splitlines() if line.strip()]
        if found:
            return found[-lines:]
    return []


def describe_pod(k: Kube, namespace: str, pod: k8s.V1Pod) -> None:
    """Print POD's phase, last events and the last log lines of each of its containers."""
    name = pod.metadata.name
    fail(f"pod {name}: {pod.status.phase if pod.status else 'unknown'}")
    events = k.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    for event in events[-EVENTS_PER_POD:]:
        console.print(
            f"    [dim]event[/] {event.type} {event.reason}: {event.message}", soft_wrap=True
        )
    for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
        logs = pod_log(k.core, namespace, name, container.name)
        if logs is None:
            console.print(f"    [dim]last log lines of {container.name}: (no log lines)[/]")
            continue
        console.print(f"    [dim]last log lines of {container.name}:[/]")
        for line in logs.splitlines()[-LOG_TAIL_LINES:]:
            console.print(f"      {line}", markup=False, soft_wrap=True)


def diagnose(k: Kube, namespace: str, selector: str | None = None) -> None:
    """Print events and the last log lines of every pod that is not healthy."""
    pods = failing_pods(k.core, namespace, selector)
    if not pods:
        warn("no failing pods found; check `kubectl get events -n " + namespace + "`")
    for pod in pods:
        describe_pod(k, namespace, pod)


def fail_pending(k: Kube, namespace: str, pending: list[Rollout], deadline: Deadline) -> None:
    """Report the rollouts that did not finish (their pods' events and logs); Exit 1."""
    for item in pending:
        fail(f"{item.kind} {item.name}: {item.ready}/{item.desired} {item.problem}".rstrip())
    diagnose(k, namespace)
    late = (
        f" within {deadline.seconds:.0f} s (`--timeout` waits longer)"
        if not deadline.left()
        else ""
    )
    raise Exit(f"Rollout in {namespace} did not finish{late}; see the events and logs above.", 1)


def explain_blocker(k: Kube, namespace: str, blocker: Blocker) -> str:
    """Print the blocked pod's events and logs; returns the one-line message for the Exit."""
    pod = read_or_none(k.core.read_namespaced_pod, blocker.pod, namespace)
    if pod is not None:
        describe_pod(k, namespace, pod)
    return blocker.message
