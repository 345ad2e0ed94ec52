"""`invoke status --env stage|prod`: one table of what runs in an environment; exit 1 if unhealthy.

Read through the API with the kubernetes client (read-only, the `view` role is enough):
- the release: image tag of the api pods and the digest they actually run (`status.imageID`,
  which nobody deploying can write), and the last deploy in the release ledger (when, by whom);
- every Deployment and StatefulSet: ready/desired, restarts of its pods, why a pod is not ready;
- every volume claim: phase, request and capacity, and its usage: `du` and `df` exec'd in a
  running pod that mounts the claim (one short exec per claim; without the `pods/exec` right,
  e.g. a viewer's kubeconfig, the row says so instead);
- the ingress URLs.
Unhealthy: a workload with fewer ready replicas than desired (or scaled to 0), a pod not ready,
a claim that is not Bound. Each row says what is wrong; `invoke logs --env ENV` shows why.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from invoke import Context, Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from rich.filesize import decimal

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, kubectl
from desbordante_ops.cluster.kube.errors import describe_error
from desbordante_ops.cluster.manifests.edge import ROUTER
from desbordante_ops.cluster.release import verify
from desbordante_ops.cluster.release.ledger import RUNTIME_SCHEME, ledger, short_id
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.image.refs import split_ref

EXEC_TIMEOUT_SECONDS = 20
# `du` of the claim's directory, then `df` of its filesystem: "<used KiB>\n<df -P line>".
USAGE_SCRIPT = 'du -sk "$1" | cut -f1; df -Pk "$1" | tail -n 1'


@dataclass(frozen=True)
class Row:
    """One line of the status table."""

    part: str
    state: str
    detail: str = ""
    healthy: bool = True


def component_of(obj: Any) -> str:
    labels = (obj.metadata.labels or {}) if obj.metadata else {}
    return str(labels.get(names.COMPONENT_LABEL, ""))


def short_digest(image_id: str) -> str:
    """`repo@sha256:0123…` -> `sha256:0123456789ab` (the digest part, 12 hex digits)."""
    _, sep, digest = image_id.rpartition("sha256:")
    return f"sha256:{digest[:12]}" if sep else (image_id or "-")


def _statuses(pod: Any) -> list[Any]:
    return list((pod.status.container_statuses or []) if pod.status else [])


def running_image(pods: Iterable[Any], container: str | None = None) -> tuple[str, str]:
    """(image reference, image ID with digest) that the first started pod runs, or ("", "")."""
    for pod in pods:
        for status in _statuses(pod):
            if (container is None or status.name == container) and status.image_id:
                return str(status.image), str(status.image_id)
    return "", ""


def release_of(core: Any, namespace: str) -> tuple[str, str]:
    """(tag, short image ID with digest) of what the api pods run; ("", "") when none runs."""
    pods = core.list_namespaced_pod(namespace, label_selector=names.selector(names.API)).items
    image, image_id = running_image(pods, names.API)
    if not image:
        return "", ""
    return split_ref(image)[1] or "latest", short_id(RUNTIME_SCHEME.sub("", image_id))


def last_deploy(core: Any, namespace: str) -> tuple[str, str, str]:
    """(tag, when, by) of NAMESPACE's newest entry in the release ledger; ("", "", why not)
    when there is none or this kubeconfig may not read it.

    The one place that reads release records (their format is owned by releases.py).
    """
    try:
        entries = [entry for entry in ledger(core).values() if entry.namespace == namespace]
    except Exit as exc:
        return "", "", str(exc.message).split(";")[0]
    if not entries:
        return "", "", "no deploy recorded"
    newest = max(entries, key=lambda entry: entry.deployed_at)
    return newest.tag, newest.deployed_at, newest.by


def pod_problems(pods: Iterable[Any]) -> list[str]:
    """Why pods are not ready: `api-7d9…: CrashLoopBackOff`."""
    problems = []
    for pod in pods:
        phase = pod.status.phase if pod.status else "Unknown"
        if phase == "Succeeded":
            continue
        statuses = _statuses(pod)
        if phase == "Running" and statuses and all(s.ready for s in statuses):
            continue
        reasons = [
            s.state.waiting.reason
            for s in statuses
            if s.state and s.state.waiting and s.state.waiting.reason
        ]
        problems.append(f"{pod.metadata.name}: {', '.join(reasons) or phase}")
    return problems


def workload_rows(k: Kube, namespace: str, pods: list[Any]) -> list[Row]:
    rows = []
    kinds = [("deployment", name) for name in names.DEPLOYMENTS]
    kinds += [("statefulset", name) for name in names.STATEFULSETS]
    found = {
        (kind, obj.metadata.name): obj
        for kind, lister in (
            ("deployment", k.apps.list_namespaced_deployment),
            ("statefulset", k.apps.list_namespaced_stateful_set),
        )
        for obj in lister(namespace).items
    }
    for kind, name in kinds:
        obj = found.get((kind, name))
        if obj is None:
            rows.append(Row(f"{kind}/{name}", "missing", "not deployed", healthy=False))
            continue
        own = [pod for pod in pods if component_of(pod) == name]
        desired = obj.spec.replicas if obj.spec.replicas is not None else 1
        ready = (obj.status.ready_replicas or 0) if obj.status else 0
        restarts = sum(s.restart_count or 0 for pod in own for s in _statuses(pod))
        image, image_id = running_image(own, name)
        tag = split_ref(image)[1] if image else "-"
        problems = pod_problems(own)
        detail = f"restarts {restarts}, {tag} {short_digest(image_id)}"
        if problems:
            detail += "; " + "; ".join(problems)
        healthy = desired > 0 and ready >= desired and not problems
        state = f"{ready}/{desired} ready" + ("" if desired else " (scaled to 0)")
        rows.append(Row(f"{kind}/{name}", state, detail, healthy))
    return rows


@dataclass(frozen=True)
class Mount:
    """A running pod's container that mounts a claim, and where."""

    pod: str
    container: str
    path: str


def claim_mounts(pods: Iterable[Any]) -> dict[str, Mount]:
    """Claim name -> a running pod, container and path that mount it."""
    mounts: dict[str, Mount] = {}
    for pod in pods:
        if not pod.status or pod.status.phase != "Running" or not pod.spec:
            continue
        volumes = {
            volume.name: volume.persistent_volume_claim.claim_name
            for volume in pod.spec.volumes or []
            if volume.persistent_volume_claim
        }
        for container in pod.spec.containers:
            for mount in container.volume_mounts or []:
                claim = volumes.get(mount.name)
                if claim and claim not in mounts:
                    mounts[claim] = Mount(pod.metadata.name, container.name, mount.mount_path)
    return mounts


def usage_command(cfg: EnvConfig, mount: Mount) -> str:
    return kubectl(
        cfg,
        "-n",
        cfg.namespace,
        "exec",
        mount.pod,
        "-c",
        mount.container,
        "--",
        "sh",
        "-c",
        USAGE_SCRIPT,
        "_",
        mount.path,
    )


def usage(c: Context, cfg: EnvConfig, mount: Mount | None) -> str:
    """`used 12.3 MB, 40.1 GB free on its disk`, or why it is not known."""
    if mount is None:
        return "usage unknown (no running pod mounts it)"
    result = attempt(c, usage_command(cfg, mount), timeout=EXEC_TIMEOUT_SECONDS)
    lines = (result.stdout or "").strip().splitlines()
    if not result.ok or len(lines) < 2:
        return f"usage unknown ({exec_failure(result.stderr or '', result.exited)})"
    try:
        used_kib = int(lines[0].split()[0])
        free_kib = int(lines[-1].split()[3])
    except (ValueError, IndexError):
        return f"usage unknown (unexpected output {shlex.quote(lines[-1])})"
    return f"used {decimal(used_kib * 1024)}, {decimal(free_kib * 1024)} free on its disk"


# What a failed `kubectl exec` said -> the one short reason shown instead (never the URL).
EXEC_FAILURES = (
    ("forbidden", "this kubeconfig may not exec into pods"),
    ("dial tcp", "the node's kubelet is not reachable from the API server"),
    ("error dialing backend", "the node's kubelet is not reachable from the API server"),
    ("connection refused", "the node's kubelet is not reachable from the API server"),
    ("i/o timeout", "the node's kubelet is not reachable from the API server"),
    ("container not found", "its container is not running"),
    ("is not running", "its container is not running"),
    ("does not have a host assigned", "its pod is not scheduled"),
)
MAX_REASON = 80


def exec_failure(stderr: str, exited: int) -> str:
    """One short reason for a failed exec (never a URL or a whole error)."""
    text = " ".join(stderr.split())
    for marker, reason in EXEC_FAILURES:
        if marker in text.lower():
            return reason
    text = " ".join(re.sub(r"\S+://\S+", "", text).split()).strip(" :")
    if not text:
        return f"exec exited {exited}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def volume_rows(c: Context, cfg: EnvConfig, k: Kube, pods: list[Any]) -> list[Row]:
    mounts = claim_mounts(pods)
    rows = []
    for claim in k.core.list_namespaced_persistent_volume_claim(cfg.namespace).items:
        name = claim.metadata.name
        phase = claim.status.phase if claim.status else "Unknown"
        requested = ((claim.spec.resources.requests or {}) if claim.spec.resources else {}).get(
            "storage", "?"
        )
        capacity = ((claim.status.capacity or {}) if claim.status else {}).get("storage", "-")
        detail = f"requested {requested}, capacity {capacity}"
        if phase == "Bound":
            detail += f"; {usage(c, cfg, mounts.get(name))}"
        rows.append(Row(f"pvc/{name}", phase, detail, phase == "Bound"))
    return rows


def ingress_rows(networking: k8s.NetworkingV1Api, namespace: str) -> list[Row]:
    rows = []
    for ingress in networking.list_namespaced_ingress(namespace).items:
        tls = {host for entry in ingress.spec.tls or [] for host in entry.hosts or []}
        # Our routers ask Traefik for TLS by annotation (manifests/edge.py), not spec.tls.
        annotations = ingress.metadata.annotations or {}
        routed_tls = annotations.get(f"{ROUTER}tls") == "true"
        for rule in ingress.spec.rules or []:
            scheme = "https" if routed_tls or rule.host in tls else "http"
            rows.append(Row(f"ingress/{ingress.metadata.name}", f"{scheme}://{rule.host}/"))
    return rows


def release_rows(k: Kube, namespace: str) -> list[Row]:
    tag, image = release_of(k.core, namespace)
    deployed, when, by = last_deploy(k.core, namespace)
    return [
        Row("release", tag or "-", image or "no api pod runs"),
        Row("last deploy", deployed or "-", f"{when} by {by or 'unknown'}" if deployed else by),
        verification_row(k, namespace),
    ]


def verification_row(k: Kube, namespace: str) -> Row:
    """The last verification of NAMESPACE (release, time, result); a failed one is unhealthy."""
    try:
        found = verify.last(k.core, namespace)
    except ApiException as exc:
        return Row("last verify", "-", f"not readable ({describe_error(exc)})")
    if found is None:
        return Row("last verify", "-", "never verified (`invoke verify --env ENV` runs it)")
    detail = f"{found.release} at {found.at} ({found.job})"
    if found.passed:
        return Row("last verify", "passed", detail)
    return Row("last verify", "failed", f"{detail}: {found.detail}", healthy=False)


def collect(c: Context, cfg: EnvConfig, k: Kube) -> list[Row]:
    """Every row of the status of CFG's environment."""
    namespace = cfg.namespace
    pods = k.core.list_namespaced_pod(
        namespace, label_selector=f"{names.NAME_LABEL}={names.APP_NAME}"
    ).items
    return [
        *release_rows(k, namespace),
        *workload_rows(k, namespace, pods),
        *volume_rows(c, cfg, k, pods),
        *ingress_rows(k.networking, namespace),
    ]


def _coloured(row: Row) -> str:
    return f"[green]{row.state}[/]" if row.healthy else f"[red]{row.state}[/]"


def show(c: Context, cfg: EnvConfig, k: Kube) -> list[Row]:
    """Print the status table of CFG's environment; Exit 1 when something is unhealthy."""
    rows = collect(c, cfg, k)
    print_table(
        f"{cfg.namespace} on {k.host}",
        ("part", "state", "detail"),
        [(row.part, _coloured(row), row.detail) for row in rows],
    )
    bad = [row.part for row in rows if not row.healthy]
    if bad:
        raise Exit(
            f"{cfg.namespace} is unhealthy: {', '.join(bad)}; "
            f"`invoke logs --env {cfg.name} --service NAME` shows why.",
            code=1,
        )
    return rows
