"""`releases.record`: a cluster admin records the release running in an environment.

For a deploy whose kubeconfig may not write the ledger (devops): the admin's run verifies what
runs first (the release's verify Job, release/verify.py) and records it only when that passed,
with the image ID the kubelet reports, like a deploy would have.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoke import Context
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import describe_error
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.cluster.manifests.render import render_as
from desbordante_ops.cluster.release.context import ROLLOUT_TIMEOUT_SECONDS, check_tag
from desbordante_ops.cluster.release.ledger import (
    WHERE,
    Record,
    kubeconfig_user,
    ledger_key,
    live_tag,
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
from desbordante_ops.image.refs import DIGEST_REF


@dataclass
class _Verified:
    job: str = ""
    at: str = ""


def deployed_as(k: Kube, cfg: EnvConfig, tag: str, recorded: list[Record]) -> str:
    """The reference TAG runs as in CFG's namespace: IMAGE_NAME:TAG, or the digest reference
    the api Deployment is pinned to when RECORDED names that image TAG (prod deploys the image
    stage's record names)."""
    api = read_or_none(k.apps.read_namespaced_deployment, names.API, cfg.namespace)
    running = api.spec.template.spec.containers[0].image if api is not None else ""
    name = cfg.toolkit.IMAGE_NAME
    if DIGEST_REF.match(running) and live_tag(k.apps, cfg.namespace, name, recorded) == tag:
        return str(running)
    return f"{name}:{tag}"


def record_plan(c: Context, cfg: EnvConfig, k: Kube, tag: str) -> Plan:
    """Verify what runs as TAG in CFG's namespace, then record it (read from the cluster)."""
    title = f"releases.record {tag}"
    key = ledger_key(cfg.namespace, tag)
    try:
        records = read(k.core)
    except ApiException as exc:
        return Plan(title, [unknown(WHERE, describe_error(exc))])
    image = f"{cfg.toolkit.IMAGE_NAME}:{tag}"
    try:
        image = deployed_as(k, cfg, tag, list(records.values()))
        ids = running_image_ids(k.core, cfg.namespace, image)
    except ApiException as exc:
        return Plan(title, [unknown(f"the image ID of {image}", describe_error(exc))])
    why = unclear_image(cfg.namespace, image, ids)
    if why:
        return Plan(
            title, [refused("record", f"{tag} in {WHERE}", f"{tag} is not recorded: {why}.")]
        )
    image_id = next(iter(ids))
    rendered = render_as(c, cfg, tag, image)
    verified = _Verified()

    def verify() -> None:
        deadline = Deadline.after(ROLLOUT_TIMEOUT_SECONDS)
        verified.job, verified.at = run_verify(k, rendered, tag, deadline, cfg.name)

    def record() -> None:
        record_release(k, cfg, image, tag, verified.job, verified.at)

    current = records.get(key)
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
