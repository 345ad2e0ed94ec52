"""`secrets.*`: the stack's passwords as Kubernetes Secrets (never shown)."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster import kube
from desbordante_ops.cluster import secrets as cluster_secrets
from desbordante_ops.core.console import print_table, step, warn
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.tasks import options


@task(
    help={
        "env": options.CLUSTER_ENV,
        "rotate": "Change this secret everywhere it is used: postgres, rabbitmq or flower "
        "(run it again to finish an interrupted rotation)",
    },
)
def generate(c: Context, env: str = "stage", rotate: str | None = None) -> None:
    """Create the stack's Secrets if missing (kept if present); --rotate changes one safely."""
    cfg = cluster_config(env)
    step(f"Secrets in {cfg.namespace}" + (f" (rotating {rotate})" if rotate else ""))
    k = kube.connect(cfg)
    with kube.api_errors(f"Writing the Secrets of {cfg.namespace}"):
        rows = cluster_secrets.ensure_secrets(cfg, k, rotate)
    print_table(f"Secrets in {cfg.namespace}", ("Secret", "Action"), rows)
    if rotate and not any(action.startswith("rotated") for _, action in rows):
        warn(f"{rotate} did not exist yet, so it was created instead of rotated.")


@task(help={"env": options.CLUSTER_ENV})
def list(c: Context, env: str = "stage") -> None:
    """Show the stack's Secrets: names, keys and ages only (never values)."""
    cfg = cluster_config(env)
    core = kube.connect(cfg).core
    with kube.api_errors(f"Reading the Secrets of {cfg.namespace}"):
        rows = cluster_secrets.listing(core, cfg.namespace)
    print_table(f"Secrets in {cfg.namespace}", ("Secret", "Keys", "Age", "Rotated at"), rows)
