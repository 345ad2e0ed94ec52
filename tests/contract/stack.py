"""A local stack for the contract run, isolated from the default one and removed afterwards.

Brought up and down with the toolkit's CLI (`invoke up` / `invoke down`), configured only through
process-environment overrides: its own run and upload directories, free ports, and a database,
role, broker vhost and user named for this run (so the default stack's passwords are never
touched), all dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres")
UP_TIMEOUT = 300
DOWN_TIMEOUT = 120


@dataclass(frozen=True)
class Stack:
    api_url: str
    environ: dict[str, str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def overrides(workdir: Path) -> dict[str, str]:
    """The settings that isolate this run's stack (process environment beats env/local.env)."""
    name = f"desbordante_contract_{secrets.token_hex(4)}"
    return {
        "LOCAL_RUN_DIR": str(workdir / "run"),
        "UPLOADED_FILES_DIR_PATH": str(workdir / "uploads"),
        "APPLICATION_SERVER_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "POSTGRES_DB": name,
        "POSTGRES_USER": name,
        "RABBITMQ_VHOST": name,
        "RABBITMQ_DEFAULT_USER": name,
        # A long poll on a task still queued must not hold the run up.
        "LONG_POLL_MAX_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }


def run(
    argv: list[str], environ: dict[str, str], timeout: float, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run a command to completion with its output captured (TimeoutExpired past `timeout`)."""
    return subprocess.run(
        argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout, check=False
    )


def invoke(task: str, environ: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `invoke TASK` (the toolkit's CLI) from the repository root."""
    return run([sys.executable, "-m", "invoke", task], environ, timeout)


def _admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is not None:  # without it the stack used guest on vhost / and created nothing
        subprocess.run([ctl, "-q", *args], capture_output=True, timeout=60, check=False)


def remove_resources(settings: dict[str, str]) -> None:
    """Drop what `invoke up` provisioned for this run (each step also when an earlier failed)."""
    name = settings["POSTGRES_DB"]
    try:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        _admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(settings["POSTGRES_USER"])))
    finally:
        _rabbitmqctl("delete_vhost", settings["RABBITMQ_VHOST"])
        _rabbitmqctl("delete_user", settings["RABBITMQ_DEFAULT_USER"])


def _tail(result: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


@contextmanager
def running(workdir: Path) -> Iterator[Stack]:
    """`invoke up` with the isolating overrides; always `invoke down` and cleanup afterwards."""
    settings = overrides(workdir)
    environ = {**os.environ, **settings}
    try:
        up = invoke("up", environ, UP_TIMEOUT)
        if up.returncode != 0:
            raise RuntimeError(f"invoke up failed (exit {up.returncode}):\n{_tail(up)}")
        yield Stack(f"http://127.0.0.1:{settings['APPLICATION_SERVER_PORT']}", environ)
    finally:
        try:
            down = invoke("down", environ, DOWN_TIMEOUT)
        finally:
            remove_resources(settings)
        if down.returncode != 0:
            raise RuntimeError(f"invoke down failed (exit {down.returncode}):\n{_tail(down)}")
