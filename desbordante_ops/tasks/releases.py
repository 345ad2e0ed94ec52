"""`releases.*`: the release ledger that prod's gate reads (which image ran where)."""

from __future__ import annotations

from invoke import Context, Exit, task

from desbordante_ops.cluster import kube
from desbordante_ops.cluster import releases as cluster_releases
from desbordante_ops.cluster.bootstrap import default_tag
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.tasks import options


@task(help={"env": "Environment whose kubeconfig reads the ledger: stage or prod"})
def list(c: Context, env: str = "stage") -> None:
    """Show every recorded release: environment, tag, image ID, when and by whom."""
    cfg = cluster_config(env)
    entries = cluster_releases.ledger(kube.connect(cfg).core).values()
    rows = [
        (e.namespace, e.tag, cluster_releases.short_id(e.image_id), e.deployed_at, e.by)
        for e in sorted(entries, key=lambda e: (e.namespace, e.deployed_at))
    ]
    print_table(
        f"{cluster_releases.SYSTEM_NAMESPACE}/{cluster_releases.LEDGER}",
        ("Namespace", "Tag", "Image ID", "Deployed at", "By"),
        rows,
    )


@task(help={"env": options.CLUSTER_ENV, "tag": options.TAG})
def record(c: Context, env: str = "stage", tag: str | None = None) -> None:
    """Record the release running in an environment (cluster admin; prod accepts only these)."""
    cfg = cluster_config(env)
    tag = tag or default_tag(c, cfg)
    image = f"{cfg.toolkit.IMAGE_NAME}:{tag}"
    if not cluster_releases.record_release(kube.connect(cfg), cfg, cfg.namespace, image, tag):
        raise Exit(f"{tag} was not recorded; see above.", 1)
