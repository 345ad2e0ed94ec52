"""`releases.record`: a cluster admin records the release running in an environment.

For a deploy whose kubeconfig may not write the ledger (devops): the admin's run verifies what
runs first (the release's verify Job, release/verify.py) and records it only when that passed,
with the image ID the kubelet reports, like a deploy would have.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoke import Context
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import describe_error
from desbordante_ops.cluster.manifests.render import render
from desbordante_ops.cluster.release.context import ROLLOUT_TIMEOUT_SECONDS, check_tag
from desbordante_ops.cluster.release.ledger import (
    WHERE,
    kubeconfig_user,
    ledger_key,
    read,
    record_release,
    running_image_ids,
    short_id,
    unclear_image,
)
from desbordante_ops.cluster.release.rollout import Deadline
from desbordante_ops.cluster.release.verify import describe_job, run_verify
from desbordante_ops.core.plan import Plan, Step, execute, note, refused, unknown
from desbordante_ops.core.settings import EnvConfig


@dataclass
class _Verified:
    job: str = ""
    at: str = ""


def record_plan(c: Context, cfg: EnvConfig, k: Kube, tag: str) -> Plan:
    """Verify what runs as TAG in CFG's namespace, then record it (read from the cluster)."""
    image = f"{cfg.toolkit.IMAGE_NAME}:{tag}"
    title = f"releases.record {tag}"
    key = ledger_key(cfg.namespace, tag)
    try:
        ids = running_image_ids(k.core, cfg.namespace, image)
    except ApiException as exc:
        return Plan(title, [unknown(f"the image ID of {image}", describe_error(exc))])
    why = unclear_image(cfg.namespace, image, ids)
    if why:
        return Plan(
            title, [refused("record", f"{tag} in {WHERE}", f"{tag} is not recorded: {why}.")]
        )
    image_id = next(iter(ids))
    rendered = render(c, cfg, tag)
    verified = _Verified()

    def verify() -> None:
        deadline = Deadline.after(ROLLOUT_TIMEOUT_SECONDS)
        verified.job, verified.at = run_verify(k, rendered, tag, deadline, cfg.name)

    def record() -> None:
        record_release(k, cfg, image, tag, verified.job, verified.at)

    try:
        current = read(k.core).get(key)
    except ApiException as exc:
        return Plan(title, [unknown(WHERE, describe_error(exc))])
    action = "add" if current is None else "update"
    if current is not None and current.image_id == image_id and current.verified:
        action = "update (verified again)"
    entry = f"image {image}, image ID {short_id(image_id)}, by {kubeconfig_user(cfg)}"
    return Plan(
        title,
        [
            note(
                "check", f"{len(ids)} image ID for {image} in {cfg.namespace}: {short_id(image_id)}"
            ),
            Step("run", describe_job(rendered), verify),
            Step(action, f"{WHERE} key {key}: {entry}, verified by the Job above", record),
        ],
    )


def run_record(c: Context, cfg: EnvConfig, tag: str, dry_run: bool) -> None:
    """`invoke releases.record`: plan it, then run it (or print it)."""
    check_tag(cfg, tag)
    k, why = connect_or_step(cfg)
    execute(
        Plan(f"releases.record {tag}", why) if k is None else record_plan(c, cfg, k, tag), dry_run
    )
