"""The dry run of `releases.record`: the ledger entry it would write, read from the cluster."""

from __future__ import annotations

from invoke import Exit
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import kube, reads
from desbordante_ops.cluster.releases import (
    LEDGER,
    SYSTEM_NAMESPACE,
    kubeconfig_user,
    ledger,
    ledger_key,
    running_image_ids,
    short_id,
    unclear_image,
)
from desbordante_ops.core.plan import Row, unreadable
from desbordante_ops.core.settings import EnvConfig

CONFIGMAP = f"ConfigMap {SYSTEM_NAMESPACE}/{LEDGER}"


def record_plan(k: kube.Kube | None, cfg: EnvConfig, image: str, tag: str) -> list[Row]:
    """What `releases.record` would write for TAG (running as IMAGE in CFG's namespace)."""
    key = ledger_key(cfg.namespace, tag)
    if k is None:
        return [("write", f"{CONFIGMAP} key {key}: the image ID its pods report")]
    try:
        with kube.api_errors(f"Reading the pods of {cfg.namespace}"):
            ids = running_image_ids(k.core, cfg.namespace, image)
    except Exit as exc:
        return [unreadable(f"the image ID of {image}", str(exc.message))]
    why = unclear_image(cfg.namespace, image, ids)
    if why:
        return [("skip", f"{tag} is not recorded ({why}): the real run fails")]
    image_id = ids.pop()
    _, state = reads.fetch(k.core.read_namespaced_config_map, LEDGER, SYSTEM_NAMESPACE)
    rows: list[Row] = []
    if state == reads.PRESENT:
        try:
            current = ledger(k.core).get(key)
        except (Exit, ApiException):
            current = None
        if current is not None and current.image_id == image_id:
            return [("keep", f"{CONFIGMAP} key {key} (already {short_id(image_id)})")]
        action = "update" if current is not None else "add"
    elif state == reads.ABSENT:
        rows += [*reads.namespace_rows(k, SYSTEM_NAMESPACE), ("create", CONFIGMAP)]
        action = "add"
    else:
        rows.append(unreadable(CONFIGMAP, state))
        action = "write"
    by = kubeconfig_user(cfg)
    entry = f"image {image}, image ID {short_id(image_id)}, by {by}"
    return [*rows, (action, f"{CONFIGMAP} key {key}: {entry}")]
