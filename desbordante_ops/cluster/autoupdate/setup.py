"""Turning stage auto-update on (`install`) and running one cycle by hand or from the timer
(`run_once`); the cycle itself is cycle.py, the units units.py."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Context, Exit

from desbordante_ops.cluster.autoupdate import cycle, statefile, units
from desbordante_ops.cluster.host.k3s import is_root, server_kubeconfig
from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.cluster.kube.objects import now_iso, read_or_none
from desbordante_ops.cluster.secrets.pull import ensure_pull_secret
from desbordante_ops.core.console import ok, step
from desbordante_ops.core.settings import cluster_config, load_config
from desbordante_ops.image import source
from desbordante_ops.image.registry import Registry, RegistryError

SUDO = "sudo .venv/bin/invoke"


def need_root(action: str) -> None:
    if not is_root():
        raise Exit(f"autoupdate.{action} changes systemd units: run `{SUDO} autoupdate.{action}`.")


def install(
    c: Context,
    env: str,
    seconds: int,
    branch: str,
    remote: str,
    registry_user: str | None,
    timeout: int,
) -> None:
    """Check the branch and the registry, store credentials, install the timer of ENV."""
    cfg = cluster_config(env)
    kubeconfig = server_kubeconfig(cfg)
    cfg = cluster_config(env, {"KUBECONFIG_PATH": str(kubeconfig)})
    k = connect(cfg)
    given = statefile.registry_login(registry_user, interactive=sys.stdin.isatty())
    secrets_file = statefile.credentials_path(cfg)
    auth = given or statefile.load_credentials(secrets_file)
    url = source.remote_url(c, cfg.root, remote)
    step(f"Checking {branch} of {url} and the registry of {cfg.toolkit.IMAGE_NAME}")
    try:
        with Registry(cfg.toolkit.IMAGE_NAME, auth) as registry:
            head, image, note = cycle.newest(c, registry, statefile.mirror_path(cfg), url, branch)
    except RegistryError as error:
        raise Exit(f"{error} Nothing was installed.") from None
    seen = f"{image.tag} ({image.ref})" if image else f"no image yet ({note})"
    ok(f"{branch} is at {head.short}: {seen}")
    if given is not None:
        statefile.save_credentials(secrets_file, given)
        ok(f"registry credentials of {given['username']} stored in {secrets_file} (root only)")
    if auth is not None and read_or_none(k.core.read_namespace, cfg.namespace) is not None:
        ensure_pull_secret(k.core, cfg.namespace, cfg.toolkit.IMAGE_NAME, auth)
    invoke = Path(sys.executable).with_name("invoke")
    if not invoke.is_file():
        raise Exit(f"{invoke} not found: install the toolkit into a venv of this checkout first.")
    arguments = ["--branch", branch, "--remote", url, "--timeout", str(timeout)]
    environment = {
        "KUBECONFIG_PATH": str(kubeconfig),
        "AUTOUPDATE_STATE_DIR": cfg.toolkit.AUTOUPDATE_STATE_DIR,
    }
    service = units.service_unit(env, cfg.root, invoke, arguments, environment, 2 * timeout + 300)
    units.install(c, units.UNIT_DIR, env, service, units.timer_unit(env, seconds))
    ok(
        f"{env} follows {branch} of {url}: a check {units.FIRST_RUN} from now, then every "
        f"{seconds} s after the last one (`invoke autoupdate.status --env {env}`)"
    )


def uninstall(c: Context, env: str) -> None:
    """Stop and remove the timer of ENV and the stored registry credentials (state stays)."""
    cfg = cluster_config(env)
    removed = units.remove(c, units.UNIT_DIR, env)
    secrets_file = statefile.credentials_path(cfg)
    if secrets_file.exists():
        secrets_file.unlink()
        ok(f"registry credentials deleted ({secrets_file}; the pods' pull Secret stays)")
    ok(f"auto-update of {env} is off" if removed else f"auto-update of {env} was not installed")


def run_once(c: Context, env: str, branch: str, remote: str, timeout: int) -> cycle.Report:
    """One cycle for ENV, its outcome recorded in the state file."""
    cfg = cluster_config(env)
    path = statefile.state_path(cfg)
    state = statefile.load_state(path)
    auth = statefile.load_credentials(statefile.credentials_path(cfg))
    state.last_check = now_iso()
    try:
        k = connect(cfg)
        url = source.remote_url(c, cfg.root, remote)
    except Exit as error:
        report = cycle.record(state, cycle.Report(cycle.ERROR, str(error.message)))
    else:
        with Registry(cfg.toolkit.IMAGE_NAME, auth) as registry:
            run = cycle.Cycle(
                c,
                cfg,
                k,
                registry,
                statefile.mirror_path(cfg),
                url,
                branch,
                settings=lambda root: load_config(env, root=root),
                registry_auth=auth,
                timeout=timeout,
            )
            report = cycle.run_cycle(run, state)
    statefile.save_state(path, state)
    return report
