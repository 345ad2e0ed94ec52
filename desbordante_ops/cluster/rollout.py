"""Waiting for a release to come up (migrate Job, rollouts) and explaining why it did not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import Kube, read_or_none
from desbordante_ops.core.console import console, fail, tracker, warn
from desbordante_ops.core.poll import poll

POLL_SECONDS = 2.0
LOG_TAIL_LINES = 30
EVENTS_PER_POD = 10


@dataclass
class Rollout:
    kind: str
    name: str
    desired: int
    ready: int
    done: bool
    problem: str = ""


def rollout_of(kind: str, obj: Any) -> Rollout:
    """How far the rollout of a Deployment or StatefulSet object is."""
    spec, status, meta = obj.spec, obj.status, obj.metadata
    desired = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    ready = status.ready_replicas or 0
    observed = (status.observed_generation or 0) >= (meta.generation or 0)
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


def rollouts(k: Kube, namespace: str) -> list[Rollout]:
    items = [
        rollout_of("Deployment", k.apps.read_namespaced_deployment(name, namespace))
        for name in names.DEPLOYMENTS
    ]
    items += [
        rollout_of("StatefulSet", k.apps.read_namespaced_stateful_set(name, namespace))
        for name in names.STATEFULSETS
    ]
    return items


def wait_for(
    check: Callable[[], tuple[bool, list[Rollout]]],
    timeout: float,
    sleep: Callable[[float], None] | None = None,
) -> list[Rollout]:
    """Poll CHECK (progress per workload) until done, a problem, or TIMEOUT; returns the last."""
    with tracker() as track:

        def step() -> tuple[bool, list[Rollout]]:
            finished, state = check()
            for item in state:
                label = f"{item.kind.lower()}/{item.name}"
                completed = item.desired if item.done else item.ready
                detail = f"{label} {completed}/{item.desired}" + (
                    f" ({item.problem})" if item.problem else ""
                )
                track.update(label, detail, completed, max(item.desired, 1))
            return finished, state

        kwargs = {"sleep": sleep} if sleep is not None else {}
        _, state = poll(
            step,
            lambda result: result[0] or any(item.problem for item in result[1]),
            timeout,
            POLL_SECONDS,
            **kwargs,
        )
    return state


def job_state(k: Kube, namespace: str, name: str) -> str:
    """`missing`, `running`, `succeeded` or `failed`."""
    job = read_or_none(k.batch.read_namespaced_job, name, namespace)
    if job is None:
        return "missing"
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return "succeeded" if cond.type == "Complete" else "failed"
    return "running"


def wait_migrate(k: Kube, namespace: str, name: str, timeout: float, **kw: Any) -> str:
    def check() -> tuple[bool, list[Rollout]]:
        state = job_state(k, namespace, name)
        done = state == "succeeded"
        return state in ("succeeded", "failed"), [Rollout("Job", name, 1, int(done), done)]

    wait_for(check, timeout, **kw)
    return job_state(k, namespace, name)


def wait_rollouts(k: Kube, namespace: str, timeout: float, **kw: Any) -> list[Rollout]:
    def check() -> tuple[bool, list[Rollout]]:
        state = rollouts(k, namespace)
        return all(item.done for item in state), state

    return [item for item in wait_for(check, timeout, **kw) if not item.done]


def failing_pods(core: Any, namespace: str, selector: str | None = None) -> list[Any]:
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


def diagnose(k: Kube, namespace: str, selector: str | None = None) -> None:
    """Print events and the last log lines of every pod that is not healthy."""
    pods = failing_pods(k.core, namespace, selector)
    if not pods:
        warn("no failing pods found; check `kubectl get events -n " + namespace + "`")
    for pod in pods:
        name = pod.metadata.name
        fail(f"pod {name}: {pod.status.phase if pod.status else 'unknown'}")
        events = k.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        for event in events[-EVENTS_PER_POD:]:
            console.print(
                f"    [dim]event[/] {event.type} {event.reason}: {event.message}", soft_wrap=True
            )
        for container in pod.spec.containers:
            try:
                logs = k.core.read_namespaced_pod_log(
                    name, namespace, container=container.name, tail_lines=LOG_TAIL_LINES
                )
            except ApiException:
                continue
            console.print(f"    [dim]last log lines of {container.name}:[/]")
            for line in (logs or "").splitlines()[-LOG_TAIL_LINES:]:
                console.print(f"      {line}", markup=False, soft_wrap=True)
