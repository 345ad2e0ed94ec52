"""`deploy`, `deploy.render`, `deploy.rollback`, `deploy.teardown`: one release to stage or prod."""

from __future__ import annotations

from typing import Any

from invoke import Context, task

from desbordante_ops.cluster import deploy as cluster_deploy
from desbordante_ops.cluster import deploy_plan, kube, lock, reads
from desbordante_ops.cluster import rollback as cluster_rollback
from desbordante_ops.cluster import teardown as cluster_teardown
from desbordante_ops.cluster.bootstrap import default_tag
from desbordante_ops.cluster.manifests import traefik
from desbordante_ops.cluster.manifests.render import render as render_release
from desbordante_ops.cluster.registry import PULL_SECRET
from desbordante_ops.cluster.releases import require_release_tag
from desbordante_ops.core.plan import print_plan
from desbordante_ops.core.settings import EnvConfig, cluster_config, load_config
from desbordante_ops.image.push import auth_from_environment
from desbordante_ops.tasks import options

TIMEOUT = (
    "Seconds to wait for prerequisites, migration and rollouts together (default 600); also the "
    "longest wait for another deploy's lock"
)
YES = "Skip the prod confirmation prompt"


def plan_options(cfg: EnvConfig) -> dict[str, Any]:
    """Prod's view of stage and the registry credential, for a deploy or its plan."""
    stage = load_config("stage")
    return {
        "stage_core": kube.connect(stage).core if cfg.name == "prod" else None,
        "stage_namespace": stage.namespace,
        "registry_auth": auth_from_environment(),
    }


def release_options(cfg: EnvConfig, yes: bool, timeout: int) -> dict[str, Any]:
    """What deploy_release needs besides the release: the plan's options, yes, timeout."""
    return {"yes": yes, "timeout": timeout, **plan_options(cfg)}


@task(
    default=True,
    help={
        "env": options.CLUSTER_ENV,
        "tag": options.TAG,
        "yes": YES,
        "timeout": TIMEOUT,
        "dry_run": options.DRY_RUN + " (`kubectl diff` shows the changes)",
    },
)
def deploy(
    c: Context,
    env: str = "stage",
    tag: str | None = None,
    yes: bool = False,
    timeout: int = cluster_deploy.ROLLOUT_TIMEOUT_SECONDS,
    dry_run: bool = False,
) -> None:
    """Render, diff, apply (with prune), migrate and wait for one release; then Traefik."""
    cfg = cluster_config(env)
    cluster_deploy.check_timeout(timeout)
    tag = tag or default_tag(c, cfg)
    if env == "prod":
        require_release_tag(tag)  # before rendering or connecting
    rendered = render_release(c, cfg, tag)
    if dry_run:
        k_or_none, why = reads.connect(cfg)
        rows = (
            deploy_plan.plan_release(c, cfg, k_or_none, rendered, tag, **plan_options(cfg))
            if k_or_none is not None
            else deploy_plan.plan_unreachable(rendered, tag, why)
        )
        print_plan(f"deploy {tag} to {cfg.namespace}", rows)
        return
    k = kube.connect(cfg)
    with lock.exclusive(k.coordination, cfg.namespace, f"deploy {tag}", wait=timeout):
        options = release_options(cfg, yes, timeout)
        cluster_deploy.deploy_release(c, cfg, k, rendered, tag, **options)
    traefik.apply_traefik_config(c, cfg)


@task(help={"env": options.CLUSTER_ENV, "tag": options.TAG})
def render(c: Context, env: str = "stage", tag: str | None = None) -> None:
    """Print the manifests of an environment as they would be applied."""
    cfg = cluster_config(env)
    pull_secret = PULL_SECRET if auth_from_environment() else None
    rendered = render_release(c, cfg, tag or default_tag(c, cfg), pull_secret=pull_secret)
    print(rendered.text, end="")


@task(
    help={
        "env": options.CLUSTER_ENV,
        "to": "Release tag to go back to (default: the one recorded before the live release)",
        "yes": YES,
        "timeout": TIMEOUT,
        "dry_run": options.DRY_RUN,
    },
)
def rollback(
    c: Context,
    env: str = "stage",
    to: str | None = None,
    yes: bool = False,
    timeout: int = cluster_deploy.ROLLOUT_TIMEOUT_SECONDS,
    dry_run: bool = False,
) -> None:
    """Go back to an earlier release; refused when the database is migrated past it."""
    cfg = cluster_config(env)
    cluster_deploy.check_timeout(timeout)
    if dry_run:
        k, why = reads.connect(cfg)
        if k is None:
            goal = to or "the release recorded before the live one"
            print_plan(f"deploy.rollback of {cfg.namespace}", [*why, ("roll back", f"to {goal}")])
            return
        tag, live = cluster_rollback.target(k, cfg, to)
        rendered = render_release(c, cfg, tag)
        rows = deploy_plan.plan_rollback(c, cfg, k, rendered, tag, live, **plan_options(cfg))
        print_plan(f"deploy.rollback of {cfg.namespace} to {tag}", rows)
        return
    k = kube.connect(cfg)
    with lock.exclusive(k.coordination, cfg.namespace, f"rollback to {to or 'previous'}", timeout):
        tag, live = cluster_rollback.target(k, cfg, to)
        rendered = render_release(c, cfg, tag)
        options = release_options(cfg, yes, timeout)
        cluster_rollback.rollback(c, cfg, k, rendered, tag, live, **options)


@task(
    help={
        "env": options.CLUSTER_ENV,
        "purge_data": "Also delete the namespace with its volumes and Secrets (asks first)",
        "yes": "Do not ask before purging data",
        "dry_run": options.DRY_RUN,
    }
)
def teardown(
    c: Context,
    env: str = "stage",
    purge_data: bool = False,
    yes: bool = False,
    dry_run: bool = False,
) -> None:
    """Remove the workloads of an environment; data stays unless --purge-data is confirmed."""
    cfg = cluster_config(env)
    if dry_run:
        rows = cluster_teardown.plan(c, cfg, purge_data=purge_data, yes=yes)
        print_plan(f"deploy.teardown of {cfg.namespace}", rows)
        return
    cluster_teardown.teardown(c, cfg, purge_data=purge_data, yes=yes)
