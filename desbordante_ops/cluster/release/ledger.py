"""The release ledger: which image ran where, and whether it was verified there.

Ledger: ConfigMap `desbordante-releases` in the toolkit's namespace `desbordante-system`, which
only a cluster admin can write (a devops Role is confined to its environment's namespace and
may only read this one ConfigMap). One key per environment and tag, `<namespace>.<tag>`, whose
value is JSON: `image` (the reference deployed), `image_id` (the image that actually ran: the
kubelet's `status.containerStatuses[].imageID` of the release's backend containers, which
nobody deploying can write), `deployed_at`, `by` (the kubeconfig user that recorded it), and
`verified_by` / `verified_at`: the verify Job that proved this very release can profile a
dataset (release/verify.py). Only verified releases are recorded; prod's gate accepts only a
verified record of stage (release/gate.py). Entries written anywhere else (e.g. a
`desbordante-releases` ConfigMap in the stage namespace, which devops can write) are never read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from invoke import Exit
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, kubeconfig_path
from desbordante_ops.cluster.kube.errors import FORBIDDEN, NOT_FOUND
from desbordante_ops.cluster.kube.objects import ensure_namespace, if_exists, now_iso, read_or_none
from desbordante_ops.core.console import ok, warn
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.refs import DIGEST_REF, split_ref
from desbordante_ops.image.tags import is_release_tag

SYSTEM_NAMESPACE = "desbordante-system"
LEDGER = "desbordante-releases"
WHERE = f"{SYSTEM_NAMESPACE}/{LEDGER}"
LOCAL_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
RUNTIME_SCHEME = re.compile(r"^[a-z-]+://")  # e.g. docker-pullable:// from older runtimes
REQUIRED_FIELDS = ("image", "image_id", "deployed_at", "by")
VERIFY_FIELDS = ("verified_by", "verified_at")


@dataclass(frozen=True)
class Record:
    """One ledger entry: TAG ran in NAMESPACE as IMAGE (the image IMAGE_ID), verified by the
    Job VERIFIED_BY at VERIFIED_AT ("": recorded before releases were verified)."""

    namespace: str
    tag: str
    image: str
    image_id: str
    deployed_at: str
    by: str
    verified_by: str = ""
    verified_at: str = ""

    @property
    def key(self) -> str:
        return ledger_key(self.namespace, self.tag)

    @property
    def verified(self) -> bool:
        return bool(self.verified_by and self.verified_at)

    @property
    def digest_ref(self) -> str | None:
        """`repo@sha256:...` when the image came from a registry; None for a local image ID."""
        return self.image_id if DIGEST_REF.match(self.image_id) else None

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["namespace"], fields["tag"]
        return json.dumps(fields, sort_keys=True)


def ledger_key(namespace: str, tag: str) -> str:
    """`<namespace>.<tag>` (a namespace has no dots, so the key splits back unambiguously)."""
    return f"{namespace}.{tag}"


def short_id(image_id: str) -> str:
    """An image ID for humans: `repo@sha256:0123456789ab` / `sha256:0123456789ab`."""
    head, sep, digest = image_id.rpartition("sha256:")
    return f"{head}{sep}{digest[:12]}" if sep else image_id


def _parse(key: str, value: str) -> Record | None:
    namespace, _, tag = key.partition(".")
    try:
        fields = json.loads(value)
        required = {f: str(fields[f]) for f in REQUIRED_FIELDS}
        optional = {f: str(fields.get(f) or "") for f in VERIFY_FIELDS}
        return Record(namespace, tag, **required, **optional)
    except (ValueError, KeyError, TypeError):
        return None


def read(core: k8s.CoreV1Api) -> dict[str, Record]:
    """Every parsable entry of the ledger ({} when it does not exist; 403 propagates)."""
    try:
        cm = core.read_namespaced_config_map(LEDGER, SYSTEM_NAMESPACE)
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return {}
        raise
    entries = (_parse(key, value) for key, value in (cm.data or {}).items())
    return {entry.key: entry for entry in entries if entry is not None}


def ledger(core: k8s.CoreV1Api) -> dict[str, Record]:
    """Every entry of the release ledger by key; Exit when this kubeconfig may not read it."""
    try:
        return read(core)
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        raise Exit(
            f"This kubeconfig may not read the release ledger ({WHERE}); use a cluster "
            "admin's kubeconfig or a devops one from `invoke access.grant`."
        ) from None


def history(core: k8s.CoreV1Api, namespace: str) -> list[Record]:
    """The releases the ledger records for NAMESPACE, oldest first."""
    entries = [entry for entry in ledger(core).values() if entry.namespace == namespace]
    return sorted(entries, key=lambda entry: (entry.deployed_at, entry.tag))


def live_tag(
    apps: k8s.AppsV1Api, namespace: str, image_name: str, recorded: list[Record]
) -> str | None:
    """The release the api Deployment runs: the tag of its image, or for an image pinned to a
    digest (prod) the tag RECORDED for that reference (deployed as it, or run as it: prod
    deploys the image ID stage's record names); None when it cannot be told."""
    deployment = read_or_none(apps.read_namespaced_deployment, names.API, namespace)
    if deployment is None:
        return None
    for container in deployment.spec.template.spec.containers:
        same = [e.tag for e in recorded if container.image in (e.image, e.image_id)]
        if same:
            return same[-1]
        repository, tag = split_ref(container.image)
        if repository == image_name and tag and "@" not in container.image:
            return tag
    return None


def running_image_ids(core: k8s.CoreV1Api, namespace: str, image: str) -> set[str]:
    """The kubelet-reported image IDs of every container of our pods in NAMESPACE that runs
    IMAGE (as written in the pod spec), init containers and finished Job pods included."""
    selector = f"{names.PART_OF_LABEL}={names.APP_NAME}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    found: set[str] = set()
    for pod in pods:
        spec, status = pod.spec, pod.status
        if spec is None or status is None:
            continue
        containers = [*(spec.init_containers or []), *spec.containers]
        wanted = {c.name for c in containers if c.image == image}
        statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
        found |= {
            RUNTIME_SCHEME.sub("", s.image_id) for s in statuses if s.name in wanted and s.image_id
        }
    return found


def unclear_image(namespace: str, image: str, ids: set[str]) -> str:
    """Why IDS (what the pods of NAMESPACE run as IMAGE) name no single image; "" if they do."""
    if not ids:
        return f"no pod in {namespace} reports an image ID for {image}"
    if len(ids) > 1:
        return f"pods in {namespace} run {len(ids)} different images as {image}"
    return ""


def kubeconfig_user(cfg: EnvConfig) -> str:
    """The user of the kubeconfig's current context (`unknown` when it cannot be read)."""
    try:
        _, active = k8s_config.list_kube_config_contexts(config_file=str(kubeconfig_path(cfg)))
        return str(active["context"]["user"])
    except (ConfigException, OSError, KeyError, TypeError):
        return "unknown"


def write_entry(core: k8s.CoreV1Api, entry: Record) -> None:
    """Add or replace ENTRY in the ledger (created, with its namespace, on first use)."""
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name=LEDGER, labels=dict(names.CREATED_LABELS)),
        data={entry.key: entry.to_json()},
    )
    if not if_exists(core.patch_namespaced_config_map, LEDGER, SYSTEM_NAMESPACE, body):
        ensure_namespace(core, SYSTEM_NAMESPACE, names.NAMESPACE_LABELS)
        core.create_namespaced_config_map(SYSTEM_NAMESPACE, body)


def not_recorded(cfg: EnvConfig, tag: str, why: str, release_tag: bool) -> str:
    """What a deploy says when its release could not be recorded, and how to fix it."""
    fix = f"a cluster admin records it with `invoke releases.record --env {cfg.name} --tag {tag}`"
    if cfg.name == "stage" and release_tag:
        return f"{why}: prod will not accept {tag} until {fix}."
    return f"{why}; {fix}."


def record_release(
    k: Kube, cfg: EnvConfig, image: str, tag: str, verified_by: str, verified_at: str
) -> bool:
    """Record that TAG runs in CFG's namespace as IMAGE, verified by the Job VERIFIED_BY, with
    the image ID the kubelet reports.

    Never fails a deploy: when the image ID is unclear or the ledger may not be written (403),
    it says so and returns False.
    """
    namespace, release_tag = cfg.namespace, is_release_tag(tag)
    ids = running_image_ids(k.core, namespace, image)
    why = unclear_image(namespace, image, ids)
    if why:
        warn(
            not_recorded(
                cfg, tag, f"{tag} is not recorded in the release ledger ({why})", release_tag
            )
        )
        return False
    entry = Record(
        namespace, tag, image, ids.pop(), now_iso(), kubeconfig_user(cfg), verified_by, verified_at
    )
    try:
        current = read(k.core).get(entry.key)
        if current is not None and (current.image_id, current.verified_by) == (
            entry.image_id,
            entry.verified_by,
        ):
            ok(f"{tag} is in the release ledger ({short_id(entry.image_id)}, verified)")
            return True
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
    try:
        write_entry(k.core, entry)
    except ApiException as exc:
        what = "may not write" if exc.status == FORBIDDEN else f"could not write ({exc.status})"
        why = f"{tag} runs in {namespace}, but this kubeconfig {what} the release ledger"
        warn(not_recorded(cfg, tag, f"{why} ({WHERE})", release_tag))
        return False
    ok(
        f"{tag} recorded in the release ledger as {short_id(entry.image_id)}, verified by "
        f"{verified_by}"
    )
    return True
