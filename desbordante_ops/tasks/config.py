"""Root tasks about settings and this host: `config`, `doctor`."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.cluster.doctor import cluster_checks
from desbordante_ops.cluster.host.tools import server_checks
from desbordante_ops.core.checks import check_and_report
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import ENV_NAMES, cluster_config, load_config, parse_sets
from desbordante_ops.local.preflight import local_checks
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.tasks import options


@task(help={"env": f"Environment: {', '.join(ENV_NAMES)}", "set_": options.SET}, iterable=["set_"])
def config(c: Context, env: str = "local", set_: list[str] | None = None) -> None:
    """Print the effective settings of an environment and where each value came from."""
    cfg = load_config(env, parse_sets(set_))
    print_table(
        f"settings of {cfg.name} (flag > environment > env/{cfg.name}.env > default)",
        ("key", "value", "source"),
        [(value.key, value.shown, value.source) for value in cfg.items()],
    )


@task(
    help={
        "env": "local (default): this host; stage or prod: the cluster of that environment",
        "set_": options.SET,
        "local_only": "Only the checks the local stack needs",
    },
    iterable=["set_"],
)
def doctor(
    c: Context, env: str = "local", set_: list[str] | None = None, local_only: bool = False
) -> None:
    """Check this host (or --env stage|prod: its cluster); a table with a fix per failure."""
    if env != "local":
        cfg = cluster_config(env, parse_sets(set_))
        check_and_report(cluster_checks(c, cfg), f"doctor --env {env} ({cfg.namespace})")
        return
    cfg = load_config("local", parse_sets(set_))
    checks = local_checks(c, cfg, ours=ProcessStack(c, cfg).sup.pids)
    if not local_only:
        checks += server_checks(c)
    check_and_report(checks, "doctor")
