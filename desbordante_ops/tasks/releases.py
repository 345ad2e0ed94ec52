"""`releases.*`: the release ledger that prod's gate reads (which image ran where, verified)."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.cluster.release.ledger import WHERE, ledger, short_id
from desbordante_ops.cluster.release.record import run_record
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.image.tags import default_tag
from desbordante_ops.tasks import options


@task(help={"env": "Environment whose kubeconfig reads the ledger: stage or prod"})
def list(c: Context, env: str = "stage") -> None:
    """Show every recorded release: environment, tag, image ID, when, by whom, verified by."""
    cfg = cluster_config(env)
    entries = ledger(connect(cfg).core).values()
    rows = [
        (
            e.namespace,
            e.tag,
            short_id(e.image_id),
            e.deployed_at,
            e.by,
            f"{e.verified_by} at {e.verified_at}" if e.verified else "not verified",
        )
        for e in sorted(entries, key=lambda e: (e.namespace, e.deployed_at))
    ]
    columns = ("Namespace", "Tag", "Image ID", "Deployed at", "By", "Verified")
    print_table(WHERE, columns, rows)


@task(help={"env": options.CLUSTER_ENV, "tag": options.TAG, "dry_run": options.DRY_RUN})
def record(c: Context, env: str = "stage", tag: str | None = None, dry_run: bool = False) -> None:
    """Verify, then record the release an environment runs (cluster admin; prod needs it)."""
    cfg = cluster_config(env)
    run_record(c, cfg, tag or default_tag(c, cfg.root), dry_run)
