"""`autoupdate.*`: stage follows a branch by itself (a systemd timer on the server); never prod."""

from __future__ import annotations

from invoke import Context, Exit, task

from desbordante_ops.cluster.autoupdate import cycle, setup, statefile, units
from desbordante_ops.cluster.release.context import ROLLOUT_TIMEOUT_SECONDS, check_timeout
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import cluster_config
from desbordante_ops.image import source

ENV = "Environment that follows the branch: stage (prod is refused: a person deploys it)"
BRANCH = "Branch whose images stage runs (CI tags them <short sha>)"
REMOTE = "Git remote the branch is read from: a remote of this checkout, or a URL"
TIMEOUT = "Seconds one deploy may wait for migration and rollouts (default 600)"


@task(
    help={
        "env": ENV,
        "interval": "Time between the end of one check and the next: 90s, 2m (default), 1h",
        "branch": BRANCH,
        "remote": REMOTE,
        "registry_user": "Registry user for a private image (password: REGISTRY_PASSWORD_FILE "
        "or asked)",
        "timeout": TIMEOUT,
    }
)
def enable(
    c: Context,
    env: str = "stage",
    interval: str = "2m",
    branch: str = "main",
    remote: str = "origin",
    registry_user: str | None = None,
    timeout: int = ROLLOUT_TIMEOUT_SECONDS,
) -> None:
    """Install the systemd timer that deploys each new image of the branch to stage."""
    cycle.check_env(env)
    setup.need_root("enable")
    seconds = units.interval_seconds(interval)
    source.check_branch(branch)
    check_timeout(timeout)
    setup.install(c, env, seconds, branch, remote, registry_user, timeout)


@task(help={"env": ENV})
def disable(c: Context, env: str = "stage") -> None:
    """Stop and remove the timer and the stored registry credentials (state stays for status)."""
    cycle.check_env(env)
    setup.need_root("disable")
    setup.uninstall(c, env)


@task(help={"env": ENV})
def status(c: Context, env: str = "stage") -> None:
    """Show the timer, the last check, what it saw and deployed, errors and broken images."""
    cycle.check_env(env)
    cfg = cluster_config(env)
    state = statefile.load_state(statefile.state_path(cfg))
    found = units.installed(units.UNIT_DIR, env)
    timer = units.timer_state(c, env) if found else {}
    rows = statefile.status_rows(state, found, timer)
    print_table(f"auto-update of {env} ({statefile.state_path(cfg)})", ("", "State"), rows)


@task(
    help={
        "env": ENV,
        "once": "Run one cycle now (what the timer runs; required)",
        "branch": BRANCH,
        "remote": REMOTE,
        "timeout": TIMEOUT,
    }
)
def run(
    c: Context,
    env: str = "stage",
    once: bool = False,
    branch: str = "main",
    remote: str = "origin",
    timeout: int = ROLLOUT_TIMEOUT_SECONDS,
) -> None:
    """One auto-update cycle: deploy the newest image of the branch if stage runs an older one."""
    cycle.check_env(env)
    if not once:
        raise Exit("autoupdate.run does one cycle: pass --once (the timer repeats it).")
    source.check_branch(branch)
    check_timeout(timeout)
    if not setup.run_once(c, env, branch, remote, timeout).ok:
        raise Exit(code=1)
