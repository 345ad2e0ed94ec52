"""Which releases ran where: the record prod's gate reads, and the rules of a prod deploy.

Prod is semi-automatic: only a release tag (vX.Y.Z), only one already deployed to stage
(recorded in the ConfigMap `desbordante-releases` of the stage namespace), and an explicit
confirmation unless --yes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import if_exists, now_iso, read_or_none
from desbordante_ops.image.tags import is_release_tag

RELEASES_CONFIGMAP = "desbordante-releases"

Confirm = Callable[[str], str]


def check_prod_rules(tag: str, stage_releases: dict[str, str], yes: bool, confirm: Confirm) -> None:
    """Refuse anything but a confirmed release tag that stage has already run."""
    if not is_release_tag(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    if tag not in stage_releases:
        raise Exit(
            f"{tag} was never deployed to stage; run `invoke deploy --env stage --tag {tag}` "
            "and check it there first."
        )
    if yes:
        return
    try:
        answer = confirm(f"Deploy {tag} to PROD? Type the tag to confirm: ")
    except EOFError:
        raise Exit("No terminal to confirm on; pass --yes to deploy to prod.") from None
    if answer.strip() != tag:
        raise Exit("Not confirmed; nothing was deployed.")


def releases(core: Any, namespace: str) -> dict[str, str]:
    """Tags recorded as deployed in NAMESPACE (tag -> JSON record); {} when none."""
    cm = read_or_none(core.read_namespaced_config_map, RELEASES_CONFIGMAP, namespace)
    return dict(cm.data or {}) if cm is not None else {}


def record_release(core: Any, namespace: str, tag: str, image: str) -> None:
    """Add TAG to the releases ConfigMap of NAMESPACE (created on first use)."""
    record = json.dumps({"image": image, "deployed_at": now_iso()})
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(
            name=RELEASES_CONFIGMAP,
            labels={**names.MANAGED_BY, names.PART_OF_LABEL: names.APP_NAME},
        ),
        data={tag: record},
    )
    if not if_exists(core.patch_namespaced_config_map, RELEASES_CONFIGMAP, namespace, body):
        core.create_namespaced_config_map(namespace, body)
