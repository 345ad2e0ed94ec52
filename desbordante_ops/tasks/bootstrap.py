"""`bootstrap`: a server from nothing to a verified stack."""

from __future__ import annotations

from invoke import Context, Exit, task

from desbordante_ops.cluster.bootstrap import Run, bootstrap_environment, plan_tag
from desbordante_ops.core.console import warn
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.image.push import auth_from_environment
from desbordante_ops.tasks import options


@task(
    default=True,
    help={
        "env": "Cluster environment to bring up: stage (default) or prod",
        "tag": options.TAG,
        "push": "Push the image to IMAGE_REGISTRY instead of loading it into k3s directly",
        "dry_run": "Print the plan only; touch nothing (works without root, k3s or Docker)",
        "yes": "Skip the prod confirmation prompt of the deploy step",
    },
)
def bootstrap(
    c: Context,
    env: str = "stage",
    tag: str | None = None,
    push: bool = False,
    dry_run: bool = False,
    yes: bool = False,
) -> None:
    """Bring a server from nothing to a verified stack (idempotent; --dry-run shows the plan)."""
    cfg = cluster_config(env)
    if push and not cfg.toolkit.IMAGE_REGISTRY:
        raise Exit(f"--push needs IMAGE_REGISTRY in env/{env}.env (or the environment).")
    if env == "prod":
        warn("prod only takes a release that stage already runs; deploy asks for confirmation")
    run = Run(c=c, cfg=cfg, tag=plan_tag(c, cfg, tag), push=push, yes=yes)
    run.registry_auth = auth_from_environment()
    bootstrap_environment(run, dry_run)
