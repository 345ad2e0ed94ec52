"""The environment the local stack's processes (or containers) run with.

Backend settings from the config, secrets only as `<NAME>_FILE` paths, nothing inherited from
the caller's environment that could override them.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from invoke import Context

from desbordante_ops.core.console import step
from desbordante_ops.core.settings import BACKEND_KEYS, SECRET_KEYS, EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.local.credentials import ensure_secrets, file_env, secrets_dir
from desbordante_ops.local.provision import (
    GUEST,
    GUEST_PASSWORD_FILE,
    provision_postgres,
    provision_rabbitmq,
)


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any backend setting or secret (the stack sets its own)."""
    environ = os.environ if environ is None else environ
    drop = {*BACKEND_KEYS, *SECRET_KEYS, *(f"{key}_FILE" for key in SECRET_KEYS)}
    return {key: value for key, value in environ.items() if key not in drop}


def stack_env(
    cfg: EnvConfig, secret_files: Mapping[str, Path], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Backend variables of the stack: config values, overrides, secrets as *_FILE paths only."""
    env = cfg.backend_env()
    env.update(overrides or {})
    env.update(file_env(dict(secret_files)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prepare(c: Context, cfg: EnvConfig) -> dict[str, str]:
    """Secrets, database role/database, broker vhost/user; returns the processes' variables."""
    step("Preparing secrets, database and broker")
    files = ensure_secrets(root=cfg.root)
    provision_postgres(c, cfg, files["POSTGRES_PASSWORD"])
    broker = provision_rabbitmq(c, cfg, files["RABBITMQ_DEFAULT_PASSWORD"])
    files = {**files, "RABBITMQ_DEFAULT_PASSWORD": broker.password_file}
    cfg.uploads_dir.mkdir(parents=True, exist_ok=True)
    return stack_env(cfg, files, broker.overrides)


def existing_env(cfg: EnvConfig) -> dict[str, str]:
    """The processes' variables from the secret files that exist (no provisioning)."""
    directory = secrets_dir(root=cfg.root)
    files = {name: directory / name for name in SECRET_KEYS if (directory / name).exists()}
    guest = directory / GUEST_PASSWORD_FILE
    if cfg.backend.RABBITMQ_DEFAULT_USER == GUEST and guest.exists():
        files["RABBITMQ_DEFAULT_PASSWORD"] = guest
    return stack_env(cfg, files)


def service_command(*args: str, python: str = sys.executable) -> str:
    """Shell command of a backend entry point (no settings on it: they are in the environment)."""
    return shlex.join([python, "-m", "desbordante_service", *args])


def run_service_command(
    c: Context, env: Mapping[str, str], *args: str, timeout: int = 60
) -> tuple[bool, list[str]]:
    """Run `desbordante-service ARGS` with the stack's environment; (ok, output lines)."""
    result = attempt(
        c, service_command(*args), env={**clean_environ(), **env}, replace_env=True, timeout=timeout
    )
    output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
    return result.ok, output
