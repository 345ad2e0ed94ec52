"""The release ledger (which image ran where) and the rules of a prod deploy.

Ledger: ConfigMap `desbordante-releases` in the toolkit's namespace `desbordante-system`, which
only a cluster admin can write (a devops Role is confined to its environment's namespace and
may only read this one ConfigMap). One key per environment and tag, `<namespace>.<tag>`, whose
value is JSON: `image` (the reference deployed), `image_id` (the image that actually ran: the
kubelet's `status.containerStatuses[].imageID` of the release's backend containers, which
nobody deploying can write), `deployed_at` and `by` (the kubeconfig user that recorded it).
A deploy records its release at the end; when its kubeconfig may not write the ledger, the
deploy still succeeds and says how a cluster admin records it (`invoke releases.record`).

Prod is semi-automatic: only a release tag (vX.Y.Z), only one the ledger records for stage,
and an explicit confirmation unless --yes. Prod then runs exactly the image stage ran: the
recorded `repo@sha256:...` when stage pulled it from a registry; when the image was loaded
into k3s without a registry (a local `sha256:` image ID), the ID of IMAGE_NAME:tag in k3s must
equal the recorded one. Entries written anywhere else (e.g. a `desbordante-releases` ConfigMap
in the stage namespace, which devops can write) are never read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from invoke import Context, Exit
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from desbordante_ops.cluster import names
from desbordante_ops.cluster.k3s import image_in_k3s
from desbordante_ops.cluster.kube import Kube, ensure_namespace, if_exists, kubeconfig_path, now_iso
from desbordante_ops.cluster.manifests.render import Rendered, render
from desbordante_ops.core.console import ok, step, warn
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.tags import is_release_tag

SYSTEM_NAMESPACE = "desbordante-system"
LEDGER = "desbordante-releases"
DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
LOCAL_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
RUNTIME_SCHEME = re.compile(r"^[a-z-]+://")  # e.g. docker-pullable:// from older runtimes
ENTRY_FIELDS = ("image", "image_id", "deployed_at", "by")

Confirm = Callable[[str], str]


@dataclass(frozen=True)
class Release:
    """One ledger entry: TAG ran in NAMESPACE as IMAGE, which was the image IMAGE_ID."""

    namespace: str
    tag: str
    image: str
    image_id: str
    deployed_at: str
    by: str

    @property
    def key(self) -> str:
        return ledger_key(self.namespace, self.tag)

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


def _parse(key: str, value: str) -> Release | None:
    namespace, _, tag = key.partition(".")
    try:
        fields = json.loads(value)
        return Release(namespace, tag, **{f: str(fields[f]) for f in ENTRY_FIELDS})
    except (ValueError, KeyError, TypeError):
        return None


def _read(core: Any) -> dict[str, Release]:
    """Every parsable entry of the ledger ({} when it does not exist; 403 propagates)."""
    try:
        cm = core.read_namespaced_config_map(LEDGER, SYSTEM_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    entries = (_parse(key, value) for key, value in (cm.data or {}).items())
    return {entry.key: entry for entry in entries if entry is not None}


def ledger(core: Any) -> dict[str, Release]:
    """Every entry of the release ledger by key; Exit when this kubeconfig may not read it."""
    try:
        return _read(core)
    except ApiException as exc:
        if exc.status != 403:
            raise
        raise Exit(
            f"This kubeconfig may not read the release ledger ({LEDGER} in {SYSTEM_NAMESPACE}); "
            "use a cluster admin's kubeconfig or a devops one from `invoke access.grant`."
        ) from None


def running_image_ids(core: Any, namespace: str, image: str) -> set[str]:
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


def kubeconfig_user(cfg: EnvConfig) -> str:
    """The user of the kubeconfig's current context (`unknown` when it cannot be read)."""
    try:
        _, active = k8s_config.list_kube_config_contexts(config_file=str(kubeconfig_path(cfg)))
        return str(active["context"]["user"])
    except (ConfigException, OSError, KeyError, TypeError):
        return "unknown"


def write_entry(core: Any, entry: Release) -> None:
    """Add or replace ENTRY in the ledger (created, with its namespace, on first use)."""
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(
            name=LEDGER, labels={**names.MANAGED_BY, names.PART_OF_LABEL: names.APP_NAME}
        ),
        data={entry.key: entry.to_json()},
    )
    if not if_exists(core.patch_namespaced_config_map, LEDGER, SYSTEM_NAMESPACE, body):
        ensure_namespace(core, SYSTEM_NAMESPACE, names.NAMESPACE_LABELS)
        core.create_namespaced_config_map(SYSTEM_NAMESPACE, body)


def not_recorded(cfg: EnvConfig, tag: str, why: str) -> str:
    """What a deploy says when its release could not be recorded, and how to fix it."""
    fix = f"a cluster admin records it with `invoke releases.record --env {cfg.name} --tag {tag}`"
    if cfg.name == "stage" and is_release_tag(tag):
        return f"{why}: prod will not accept {tag} until {fix}."
    return f"{why}; {fix}."


def unclear_image(namespace: str, image: str, ids: set[str]) -> str:
    """Why IDS (what the pods of NAMESPACE run as IMAGE) name no single image; "" if they do."""
    if not ids:
        return f"no pod in {namespace} reports an image ID for {image}"
    if len(ids) > 1:
        return f"pods in {namespace} run {len(ids)} different images as {image}"
    return ""


def record_release(k: Kube, cfg: EnvConfig, namespace: str, image: str, tag: str) -> bool:
    """Record that TAG runs in NAMESPACE as IMAGE, with the image ID the kubelet reports.

    Never fails a deploy: when the image ID is unclear or the ledger may not be written (403),
    it says so and returns False.
    """
    ids = running_image_ids(k.core, namespace, image)
    why = unclear_image(namespace, image, ids)
    if why:
        warn(not_recorded(cfg, tag, f"{tag} is not recorded in the release ledger ({why})"))
        return False
    entry = Release(namespace, tag, image, ids.pop(), now_iso(), kubeconfig_user(cfg))
    try:
        current = _read(k.core).get(entry.key)
        if current is not None and current.image_id == entry.image_id:
            ok(f"{tag} is in the release ledger ({short_id(entry.image_id)})")
            return True
    except ApiException as exc:
        if exc.status != 403:
            raise
    try:
        write_entry(k.core, entry)
    except ApiException as exc:
        what = "may not write" if exc.status == 403 else f"could not write ({exc.status})"
        why = f"{tag} runs in {namespace}, but this kubeconfig {what} the release ledger"
        warn(not_recorded(cfg, tag, f"{why} ({LEDGER} in {SYSTEM_NAMESPACE})"))
        return False
    ok(f"{tag} recorded in the release ledger as {short_id(entry.image_id)}")
    return True


def _local_image(c: Context, entry: Release, ref: str) -> str:
    """REF, when k3s holds under it exactly the local image stage ran; Exit otherwise."""
    if not LOCAL_ID.match(entry.image_id):
        raise Exit(
            f"The ledger's image ID for {entry.tag} ({entry.image_id}) is neither a registry "
            f"digest nor a local image ID; a cluster admin can record it again "
            f"(`invoke releases.record --env stage --tag {entry.tag}`)."
        )
    found = image_in_k3s(c, ref)
    if found != entry.image_id:
        have = f"has {short_id(found)}" if found else "has no image"
        raise Exit(
            f"Stage ran {entry.tag} as the local image {short_id(entry.image_id)} (loaded into "
            f"k3s without a registry), but k3s on this machine {have} under {ref}: deploy prod "
            "on the k3s server with the image stage ran, or ship releases through a registry."
        )
    return ref


def require_release_tag(tag: str) -> str:
    """TAG when it is a release tag vX.Y.Z (the only tags prod takes); Exit otherwise."""
    if not is_release_tag(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    return tag


def check_prod_rules(
    c: Context,
    ledger_core: Any,
    stage_namespace: str,
    tag: str,
    image: str,
    yes: bool,
    confirm: Confirm,
) -> str:
    """Refuse anything but a confirmed release tag that stage ran; returns the image reference
    prod must run (`repo@sha256:...`, or IMAGE itself when its k3s image ID matches)."""
    require_release_tag(tag)
    entry = ledger(ledger_core).get(ledger_key(stage_namespace, tag))
    if entry is None:
        raise Exit(
            f"{tag} never ran on stage (no entry in the release ledger {SYSTEM_NAMESPACE}/"
            f"{LEDGER}); run `invoke deploy --env stage --tag {tag}` and check it there first."
        )
    pinned = entry.digest_ref or _local_image(c, entry, image)
    if not yes:
        try:
            answer = confirm(
                f"Deploy {tag} ({short_id(entry.image_id)}, ran on stage {entry.deployed_at}) "
                "to PROD? Type the tag to confirm: "
            )
        except EOFError:
            raise Exit("No terminal to confirm on; pass --yes to deploy to prod.") from None
        if answer.strip() != tag:
            raise Exit("Not confirmed; nothing was deployed.")
    return pinned


def gate_prod(
    c: Context,
    cfg: EnvConfig,
    rendered: Rendered,
    tag: str,
    ledger_core: Any,
    stage_namespace: str,
    yes: bool,
    confirm: Confirm,
) -> Rendered:
    """The prod rules for RENDERED; returns the manifests to apply, pinned to the digest stage
    ran when it came from a registry (re-rendered with `images: digest`)."""
    pinned = check_prod_rules(c, ledger_core, stage_namespace, tag, rendered.image, yes, confirm)
    if pinned == rendered.image:
        return rendered
    match = DIGEST_REF.match(pinned)
    assert match is not None  # check_prod_rules returns rendered.image or a digest reference
    step(f"prod runs exactly the image stage ran: {pinned}")
    return render(c, cfg, tag, image_name=match["repo"], digest=match["digest"])
