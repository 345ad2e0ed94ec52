"""Root task `verify`: prove the release an environment runs can profile a dataset."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster.release.verify import run_verify_task
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.tasks import options


@task(
    help={
        "env": options.CLUSTER_ENV,
        "tag": "Release whose verify Job runs (default: the one the api Deployment runs)",
        "dry_run": options.DRY_RUN,
    }
)
def verify(c: Context, env: str = "stage", tag: str | None = None, dry_run: bool = False) -> None:
    """Run the release's verify Job (upload, profile, check, delete); `status` shows the result."""
    run_verify_task(c, cluster_config(env), tag, dry_run)
