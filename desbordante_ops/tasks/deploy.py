"""`deploy`, `deploy.render`, `deploy.rollback`, `deploy.teardown`: one release to stage or prod."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster.release.context import ROLLOUT_TIMEOUT_SECONDS, Options
from desbordante_ops.cluster.release.deploy import manifests_text, run_deploy
from desbordante_ops.cluster.release.rollback import run_rollback
from desbordante_ops.cluster.release.teardown import run_teardown
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.image.push import auth_from_environment
from desbordante_ops.image.tags import default_tag
from desbordante_ops.tasks import options

TIMEOUT = (
    "Seconds to wait for prerequisites, migration, rollouts and verification together (default "
    "600); also the longest wait for another deploy's lock"
)
YES = "Skip the prod confirmation prompt"
ALL = "Also print what deploy does not apply: the Namespace and the verify Job"


def _options(yes: bool, timeout: float) -> Options:
    return Options(yes=yes, timeout=timeout, registry_auth=auth_from_environment())


@task(
    default=True,
    help={
        "env": options.CLUSTER_ENV,
        "tag": options.TAG,
        "yes": YES,
        "timeout": TIMEOUT,
        "dry_run": options.DRY_RUN + " (the diff shows what changes)",
    },
)
def deploy(
    c: Context,
    env: str = "stage",
    tag: str | None = None,
    yes: bool = False,
    timeout: int = ROLLOUT_TIMEOUT_SECONDS,
    dry_run: bool = False,
) -> None:
    """Apply one release (server-side, with prune), migrate, wait, verify, record; Traefik."""
    cfg = cluster_config(env)
    run_deploy(c, cfg, tag or default_tag(c, cfg.root), _options(yes, timeout), dry_run)


@task(help={"env": options.CLUSTER_ENV, "tag": options.TAG, "all": ALL})
def render(c: Context, env: str = "stage", tag: str | None = None, all: bool = False) -> None:
    """Print the manifests `deploy` applies (for `kubectl apply --server-side -f -`)."""
    cfg = cluster_config(env)
    print(manifests_text(c, cfg, tag or default_tag(c, cfg.root), all), end="")


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
    timeout: int = ROLLOUT_TIMEOUT_SECONDS,
    dry_run: bool = False,
) -> None:
    """Go back to an earlier release; refused when the database is migrated past it."""
    run_rollback(c, cluster_config(env), to, _options(yes, timeout), dry_run)


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
    run_teardown(cluster_config(env), purge_data, yes, dry_run)
