"""`secrets.*`: the stack's passwords as Kubernetes Secrets (never shown)."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.cluster.kube.errors import api_errors
from desbordante_ops.cluster.secrets.generate import listing, run_generate
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.tasks import options


@task(
    help={
        "env": options.CLUSTER_ENV,
        "rotate": "Change this secret everywhere it is used: postgres, rabbitmq, flower or "
        "api-auth (run it again to finish an interrupted rotation)",
        "dry_run": options.DRY_RUN,
    },
)
def generate(
    c: Context, env: str = "stage", rotate: str | None = None, dry_run: bool = False
) -> None:
    """Create the stack's Secrets if missing (kept if present); --rotate changes one safely."""
    run_generate(cluster_config(env), rotate, dry_run)


@task(help={"env": options.CLUSTER_ENV})
def list(c: Context, env: str = "stage") -> None:
    """Show the stack's Secrets: names, keys and ages only (never values)."""
    cfg = cluster_config(env)
    core = connect(cfg).core
    with api_errors(f"Reading the Secrets of {cfg.namespace}"):
        rows = listing(core, cfg.namespace)
    print_table(f"Secrets in {cfg.namespace}", ("Secret", "Keys", "Age", "Rotated at"), rows)
