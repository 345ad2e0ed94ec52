"""`access.*`: team members' kubeconfigs for one environment (viewer or devops)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit, task

from desbordante_ops.cluster import access as team
from desbordante_ops.cluster import kube
from desbordante_ops.core.console import ok, print_table, step, warn
from desbordante_ops.core.settings import CLUSTER_ENVS, cluster_config
from desbordante_ops.tasks import options


def _name(name: str) -> str:
    if not name:
        raise Exit("Pass --name NAME (the person's short name, e.g. jane-doe).")
    team.account_name(name)
    return name


@task(
    help={
        "name": "Person's short name, e.g. jane-doe (lower-case, digits, '-')",
        "role": "viewer (read-only) or devops (deploys the environment)",
        "env": options.CLUSTER_ENV,
        "days": f"Token lifetime in days (default {team.DEFAULT_DAYS}); grant again to renew",
        "server": "API URL written into the kubeconfig (default: the one you use)",
        "output": "Kubeconfig file to write (default: <name>-<env>.kubeconfig, mode 0600)",
    },
)
def grant(
    c: Context,
    name: str = "",
    role: str = "viewer",
    env: str = "stage",
    days: int = team.DEFAULT_DAYS,
    server: str | None = None,
    output: str | None = None,
) -> None:
    """Give a person access to one environment and write their kubeconfig (0600)."""
    cfg = cluster_config(env)
    _name(name)
    target = Path(output) if output else cfg.root / f"{name}-{env}.kubeconfig"
    step(f"Granting {role} on {cfg.namespace} to {name}")
    expires = team.grant(kube.connect(cfg), cfg.namespace, name, role, target, int(days), server)
    ok(f"kubeconfig for {name} written to {target} (0600, token valid until {expires})")
    warn("hand it over privately (it is a credential); `invoke access.revoke` disables it")


@task(
    help={
        "name": "Person's short name used at grant time",
        "env": "Only this environment (default: every cluster environment)",
    },
)
def revoke(c: Context, name: str = "", env: str | None = None) -> None:
    """Take a person's access away (their kubeconfig stops working at once)."""
    _name(name)
    cfgs = [cluster_config(e) for e in ([env] if env else CLUSTER_ENVS)]
    namespaces = [cfg.namespace for cfg in cfgs]
    removed = team.revoke(kube.connect(cfgs[0]), name, namespaces)
    if removed:
        ok(f"access of {name} revoked in {', '.join(removed)}")
    else:
        ok(f"{name} had no access in {', '.join(namespaces)}")


@task(help={"env": options.CLUSTER_ENV})
def list(c: Context, env: str = "stage") -> None:
    """Show who has access to an environment and with which role."""
    cfg = cluster_config(env)
    rows = team.accounts(kube.connect(cfg), cfg.namespace)
    print_table(f"access to {cfg.namespace}", ("Name", "Role", "Since"), rows)
