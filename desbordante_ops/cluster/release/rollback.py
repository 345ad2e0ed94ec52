"""Roll an environment back to an earlier release, unless its database is already past it.

The target is `--to TAG` or the release the ledger (release/ledger.py) recorded for the
namespace before the one that is live (the image of the api Deployment). Before anything is
applied, a one-off Job runs the *old* image's own `desbordante-service migrate --check` against
the database (same pod template as that release's migrate Job: Secrets, network policy, pull
secret). It exits 0 only when the database is at the head revision the old image knows;
anything else means a later release migrated the schema past it (or the database is
unreachable), and the rollback is refused with what the check said.

Why a Job of the old image and not a pod exec: only the old image knows its Alembic head; an
exec would run in a pod of the *current* image, and it would need `pods/exec` rights that a
deploy does not. The Job needs what deploy already uses (create/get/delete Jobs, pod logs).
Then the old release goes through the same deploy plan as any deploy (prod rules, prune,
migrate Job — a no-op at that revision —, waits, verify): the check is one more step of it.
The manifests come from the working tree, so a rollback changes the image (and config), not
k8s/: check out the old tag to roll those back.
"""

from __future__ import annotations

import copy
from typing import Any

from invoke import Context, Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.objects import if_exists
from desbordante_ops.cluster.manifests.render import Rendered, job_spec_hash
from desbordante_ops.cluster.release.context import Options, open_release
from desbordante_ops.cluster.release.deploy import BeforeApply, Run, deploy_release
from desbordante_ops.cluster.release.ledger import history, live_tag
from desbordante_ops.cluster.release.rollout import (
    explain_blocker,
    job_log_lines,
    wait_job,
)
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Plan, Step, execute
from desbordante_ops.core.settings import EnvConfig

CHECK_PREFIX = "schema-check"
CHECK_ARGS = ["migrate", "--check"]
CHECK_DEADLINE_SECONDS = 180
CHECK_TTL_SECONDS = 600
UNREACHABLE = "database unreachable"


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
    """(the tag to roll back to, the live one) in CFG's namespace."""
    recorded = history(k.core, cfg.namespace)
    live = live_tag(k.apps, cfg.namespace, cfg.toolkit.IMAGE_NAME, recorded)
    return choose_target([entry.tag for entry in recorded], live, to), live


def check_job(rendered: Rendered, tag: str) -> dict[str, Any]:
    """A Job running the release's image with `migrate --check`, from its migrate Job; named
    `schema-check-<tag>-<hash of its spec>`."""
    job = copy.deepcopy(rendered.find("Job", rendered.migrate_job))
    spec = job["spec"]
    spec.update(
        backoffLimit=0,
        activeDeadlineSeconds=CHECK_DEADLINE_SECONDS,
        ttlSecondsAfterFinished=CHECK_TTL_SECONDS,
    )
    for container in spec["template"]["spec"]["containers"]:
        if container["image"] == rendered.image:
            container["args"] = list(CHECK_ARGS)
    prefix = f"{CHECK_PREFIX}-{names.tag_slug(tag)}"
    job["metadata"] = {
        "name": names.dns_label(prefix, job_spec_hash(job)),
        "namespace": rendered.namespace,
        "labels": {
            **names.MANAGED_BY,
            names.NAME_LABEL: names.APP_NAME,
            names.COMPONENT_LABEL: names.MIGRATE,
        },
    }
    return job


def check_schema(run: Run, job: dict[str, Any]) -> None:
    """Run the check JOB; Exit unless the database is at the head revision its image knows."""
    x = run.x
    k, namespace, name, tag = x.k, x.namespace, job["metadata"]["name"], x.tag
    if_exists(k.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
    k.batch.create_namespaced_job(namespace, job)
    try:
        state, blocker = wait_job(k, namespace, name, run.deadline)
        if blocker is not None:
            raise Exit(explain_blocker(k, namespace, blocker), 1)
        lines = job_log_lines(k.core, namespace, name, names.MIGRATE)
        said = lines[-1].strip() if lines else ""
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


def schema_check(live: str | None) -> BeforeApply:
    """The `before_apply` of a rollback from LIVE: its rows, and the schema check step."""

    def steps(run: Run) -> list[Step]:
        x = run.x
        job = check_job(x.rendered, x.tag)
        name = f"Job {x.namespace}/{job['metadata']['name']}"
        return [
            Step(
                "roll back",
                f"{x.namespace}: {live or 'an unknown release'} -> {x.tag}",
            ),
            Step(
                "run",
                f"{name} of {x.image}: `migrate --check` (refuses when the database is "
                "migrated past it; deleted afterwards)",
                lambda: check_schema(run, job),
            ),
        ]

    return steps


def run_rollback(
    c: Context, cfg: EnvConfig, to: str | None, options: Options, dry_run: bool
) -> bool:
    """`invoke deploy.rollback`: plan the way back to TO (or the release before the live one)
    and run it (or print it)."""
    k, why = connect_or_step(cfg)
    if k is None:
        goal = to or "the release recorded before the live one"
        execute(Plan(f"deploy.rollback of {cfg.namespace} to {goal}", why), dry_run)
        return False
    tag, live = target(k, cfg, to)
    x, why = open_release(c, cfg, tag, options)
    if x is None:
        execute(Plan(f"deploy.rollback of {cfg.namespace} to {tag}", why), dry_run)
        return False
    title = f"deploy.rollback of {cfg.namespace} to {tag}"
    return deploy_release(x, dry_run, title, before_apply=schema_check(live))
