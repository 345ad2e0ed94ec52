"""Roll an environment back to an earlier release, unless its database is already past it.

The target is `--to TAG` or the release the ledger (releases.py) recorded for the namespace
before the one that is live (the image of the api Deployment). Before anything is applied, a
one-off Job runs the *old* image's own `desbordante-service migrate --check` against the
database (same pod template as that release's migrate Job: Secrets, network policy, pull
secret). It exits 0 only when the database is at the head revision the old image knows; anything
else means a later release migrated the schema past it (or the database is unreachable), and the
rollback is refused with what the check said.

Why a Job of the old image and not a pod exec: only the old image knows its Alembic head; an
exec would run in a pod of the *current* image, and it would need `pods/exec` rights that a
deploy does not. The Job needs what deploy already uses (create/get/delete Jobs, pod logs), and
it is tested like the rest of the cluster code: in-memory API fakes, no cluster.
Then the old release goes through the same `deploy_release` as any deploy (prod rules, prune,
migrate Job — a no-op at that revision —, waits). The manifests come from the working tree, so
a rollback changes the image (and config), not k8s/: check out the old tag to roll those back.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from invoke import Context, Exit

from desbordante_ops.cluster import names
from desbordante_ops.cluster.deploy import deploy_release
from desbordante_ops.cluster.kube import Kube, if_exists, read_or_none
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.releases import Release, ledger, require_release_tag
from desbordante_ops.cluster.rollout import (
    JOB_NAME_LABEL,
    Deadline,
    explain_blocker,
    pod_log,
    wait_job,
)
from desbordante_ops.core.console import ok, step
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.refs import split_ref

CHECK_PREFIX = "schema-check"
CHECK_ARGS = ["migrate", "--check"]
CHECK_DEADLINE_SECONDS = 180
CHECK_TTL_SECONDS = 600
UNREACHABLE = "database unreachable"


def history(core: Any, namespace: str) -> list[Release]:
    """The releases the ledger records for NAMESPACE, oldest first."""
    entries = [entry for entry in ledger(core).values() if entry.namespace == namespace]
    return sorted(entries, key=lambda entry: (entry.deployed_at, entry.tag))


def live_tag(apps: Any, namespace: str, image_name: str, recorded: list[Release]) -> str | None:
    """The release the api Deployment runs: the tag of its image, or for an image pinned to a
    digest (prod) the tag RECORDED for that reference; None when it cannot be told."""
    deployment = read_or_none(apps.read_namespaced_deployment, names.API, namespace)
    if deployment is None:
        return None
    for container in deployment.spec.template.spec.containers:
        same = [entry.tag for entry in recorded if entry.image == container.image]
        if same:
            return same[-1]
        repository, tag = split_ref(container.image)
        if repository == image_name and tag and "@" not in container.image:
            return tag
    return None


def choose_target(recorded: list[str], live: str | None, to: str | None) -> str:
    """TO, or the release recorded before LIVE (the newest other one when LIVE is unknown)."""
    if to:
        target = to
    else:
        earlier = recorded[: recorded.index(live)] if live in recorded else recorded
        earlier = [tag for tag in earlier if tag != live]
        if not earlier:
            raise Exit("No earlier release is recorded to go back to; pass --to TAG.")
        target = earlier[-1]
    if target == live:
        raise Exit(f"{target} is already live: nothing to roll back.")
    return target


def target(k: Kube, cfg: EnvConfig, to: str | None) -> tuple[str, str | None]:
    """(the tag to roll back to, the live one) in CFG's namespace; prod takes release tags only."""
    recorded = history(k.core, cfg.namespace)
    live = live_tag(k.apps, cfg.namespace, cfg.toolkit.IMAGE_NAME, recorded)
    tag = choose_target([entry.tag for entry in recorded], live, to)
    return (require_release_tag(tag) if cfg.name == "prod" else tag), live


def check_job_name(tag: str, token: str) -> str:
    """`schema-check-<tag>-<token>`, a DNS label of at most 63 characters."""
    return names.dns_label(f"{CHECK_PREFIX}-{names.tag_slug(tag)}", token)


def check_job(rendered: Rendered, name: str) -> dict[str, Any]:
    """A Job running the release's image with `migrate --check`, from its migrate Job."""
    job = copy.deepcopy(rendered.find("Job", rendered.migrate_job))
    job["metadata"] = {
        "name": name,
        "namespace": rendered.namespace,
        "labels": {
            **names.MANAGED_BY,
            names.NAME_LABEL: names.APP_NAME,
            names.COMPONENT_LABEL: names.MIGRATE,
        },
    }
    spec = job["spec"]
    spec.update(
        backoffLimit=0,
        activeDeadlineSeconds=CHECK_DEADLINE_SECONDS,
        ttlSecondsAfterFinished=CHECK_TTL_SECONDS,
    )
    for container in spec["template"]["spec"]["containers"]:
        if container["image"] == rendered.image:
            container["args"] = list(CHECK_ARGS)
    return job


def job_said(core: Any, namespace: str, name: str) -> str:
    """The last line the check Job's pod wrote ("" when it wrote nothing)."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
    for pod in pods:
        logs = pod_log(core, namespace, pod.metadata.name, names.MIGRATE)
        lines = [line for line in (logs or "").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return ""


def check_schema(k: Kube, rendered: Rendered, tag: str, deadline: Deadline) -> None:
    """Exit unless the database is at the head revision the image of TAG knows."""
    namespace = rendered.namespace
    name = check_job_name(tag, secrets.token_hex(4))
    step(f"Checking the database schema with {tag}'s own `migrate --check` (job {name})")
    k.batch.create_namespaced_job(namespace, check_job(rendered, name))
    try:
        state, blocker = wait_job(k, namespace, name, deadline)
        if blocker is not None:
            raise Exit(explain_blocker(k, namespace, blocker), 1)
        said = job_said(k.core, namespace, name)
    finally:
        if_exists(k.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
    if state == "succeeded":
        ok(f"the database schema is what {tag} expects")
        return
    if state != "failed":
        raise Exit(f"The schema check of {tag} did not finish in time; nothing was changed.", 1)
    if UNREACHABLE in said:
        raise Exit(
            f"Cannot check the schema for {tag}: {said}. Get postgres running "
            f"(`kubectl -n {namespace} get pods`) and try again; nothing was changed.",
            1,
        )
    raise Exit(
        f"Refusing to roll back to {tag}: the database is migrated past what {tag} knows "
        f"(its `migrate --check`: {said or 'failed'}). Deploy a fixed newer release instead, or "
        "restore a database backup taken before the later release first. Nothing was changed.",
        1,
    )


def rollback(
    c: Context,
    cfg: EnvConfig,
    k: Kube,
    rendered: Rendered,
    tag: str,
    live: str | None,
    **deploy_kw: Any,
) -> bool:
    """Deploy the earlier release RENDERED (of TAG) once its schema check passes."""
    step(f"Rolling {rendered.namespace} back from {live or 'an unknown release'} to {tag}")

    def before_apply(release: Rendered, deadline: Deadline) -> None:
        check_schema(k, release, tag, deadline)

    return deploy_release(c, cfg, k, rendered, tag, before_apply=before_apply, **deploy_kw)
