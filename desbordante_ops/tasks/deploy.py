"""`deploy`, `deploy.render`, `deploy.teardown`: one release to stage or prod."""

from __future__ import annotations

from invoke import Context, Exit, task

from desbordante_ops.cluster import deploy as cluster_deploy
from desbordante_ops.cluster import edge, kube, traefik
from desbordante_ops.cluster.bootstrap import default_tag
from desbordante_ops.cluster.render import render as render_release
from desbordante_ops.core.settings import cluster_config, load_config
from desbordante_ops.image.tags import is_release_tag
from desbordante_ops.tasks import options


@task(
    default=True,
    help={
        "env": options.CLUSTER_ENV,
        "tag": options.TAG,
        "yes": "Skip the prod confirmation prompt",
    },
)
def deploy(c: Context, env: str = "stage", tag: str | None = None, yes: bool = False) -> None:
    """Render, diff, apply, migrate and wait for the rollout of one release; then the edge."""
    cfg = cluster_config(env)
    tag = tag or default_tag(c, cfg)
    if env == "prod" and not is_release_tag(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    rendered = render_release(c, cfg, tag)
    k = kube.connect(cfg)
    stage = load_config("stage")
    stage_core = kube.connect(stage).core if env == "prod" else None
    cluster_deploy.deploy_release(
        c, cfg, k, rendered, tag, yes=yes, stage_core=stage_core, stage_namespace=stage.namespace
    )
    edge.prune(c, cfg)
    traefik.apply_traefik_config(c, cfg)


@task(help={"env": options.CLUSTER_ENV, "tag": options.TAG})
def render(c: Context, env: str = "stage", tag: str | None = None) -> None:
    """Print the manifests of an environment as they would be applied."""
    cfg = cluster_config(env)
    print(render_release(c, cfg, tag or default_tag(c, cfg)).text, end="")


@task(
    help={
        "env": options.CLUSTER_ENV,
        "purge_data": "Also delete the namespace with its volumes and Secrets (asks first)",
        "yes": "Do not ask before purging data",
    }
)
def teardown(c: Context, env: str = "stage", purge_data: bool = False, yes: bool = False) -> None:
    """Remove the workloads of an environment; data stays unless --purge-data is confirmed."""
    cfg = cluster_config(env)
    rendered = render_release(c, cfg, default_tag(c, cfg))
    cluster_deploy.teardown(c, cfg, rendered, purge_data=purge_data, yes=yes)
