"""`access.*`: team members' kubeconfigs for one environment (viewer or devops)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit, task

from desbordante_ops.cluster.access import (
    DEFAULT_DAYS,
    account_name,
    accounts,
    run_grant,
    run_revoke,
)
from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import CLUSTER_ENVS, cluster_config
from desbordante_ops.tasks import options


def _name(name: str) -> str:
    if not name:
        raise Exit("Pass --name NAME (the person's short name, e.g. jane-doe).")
    account_name(name)
    return name


@task(
    help={
        "name": "Person's short name, e.g. jane-doe (lower-case, digits, '-')",
        "role": "viewer (read-only) or devops (deploys the environment)",
        "env": options.CLUSTER_ENV,
        "days": f"Token lifetime in days (default {DEFAULT_DAYS}); grant again to renew",
        "server": "API URL written into the kubeconfig (default: the one you use)",
        "output": "Kubeconfig file to write (default: <name>-<env>.kubeconfig, mode 0600)",
        "dry_run": options.DRY_RUN,
    },
)
def grant(
    c: Context,
    name: str = "",
    role: str = "viewer",
    env: str = "stage",
    days: int = DEFAULT_DAYS,
    server: str | None = None,
    output: str | None = None,
    dry_run: bool = False,
) -> None:
    """Give a person access to one environment and write their kubeconfig (0600)."""
    cfg = cluster_config(env)
    target = Path(output) if output else cfg.root / f"{_name(name)}-{env}.kubeconfig"
    run_grant(cfg, name, role, target, int(days), server, dry_run)


@task(
    help={
        "name": "Person's short name used at grant time",
        "env": "Only this environment (default: every cluster environment)",
        "dry_run": options.DRY_RUN,
    },
)
def revoke(c: Context, name: str = "", env: str | None = None, dry_run: bool = False) -> None:
    """Take a person's access away (their kubeconfig stops working at once)."""
    _name(name)
    cfgs = [cluster_config(e) for e in ([env] if env else CLUSTER_ENVS)]
    run_revoke(cfgs[0], name, [cfg.namespace for cfg in cfgs], dry_run)


@task(help={"env": options.CLUSTER_ENV})
def list(c: Context, env: str = "stage") -> None:
    """Show who has access to an environment and with which role."""
    cfg = cluster_config(env)
    rows = accounts(connect(cfg), cfg.namespace)
    print_table(f"access to {cfg.namespace}", ("Name", "Role", "Since"), rows)
