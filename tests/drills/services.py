"""Restart the machine's RabbitMQ and PostgreSQL; always leave them running again."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from serviceprocs import port_open, wait_for

RABBITMQ_PORT = 5672
POSTGRES_PORT = 5432
COMMAND_TIMEOUT = 120


def _run(*command: str) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr or result.stdout}"


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not found: this drill needs the machine's own service")


@contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """Stop the RabbitMQ application (a real broker restart); start it again on exit."""
    _require("rabbitmqctl")
    try:
        _run("rabbitmqctl", "stop_app")
        wait_for(lambda: not port_open(RABBITMQ_PORT), 60, "RabbitMQ to stop listening")
        yield
    finally:
        _run("rabbitmqctl", "start_app")
        wait_for(lambda: port_open(RABBITMQ_PORT), 120, "RabbitMQ to listen again")


def _postgres_cluster() -> list[str]:
    _require("pg_ctlcluster")
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
    if not versions:
        pytest.skip("no PostgreSQL cluster under /etc/postgresql")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


@contextmanager
def postgres_stopped() -> Iterator[None]:
    """Stop the PostgreSQL cluster (fast shutdown); start it again on exit."""
    cluster = _postgres_cluster()
    try:
        _run(*cluster, "stop", "--", "-m", "fast")
        wait_for(lambda: not port_open(POSTGRES_PORT), 60, "PostgreSQL to stop listening")
        yield
    finally:
        _run(*cluster, "start")
        wait_for(lambda: port_open(POSTGRES_PORT), 120, "PostgreSQL to listen again")
