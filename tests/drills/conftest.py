"""Drill fixtures: a fresh database, upload directory and queue per run; real processes.

Every API gets its own free loopback port (never 8000/5555, which the local stack uses) and
every process started by a test is stopped when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from .procs import Api, ServiceProcess, Worker

ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres")
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


def _delete_queue(queue: str) -> None:
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=10) as connection:
        connection.channel().queue_delete(queue)


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Backend variables of this run: own database, uploads and queue; schema migrated."""
    suffix = secrets.token_hex(4)
    database = f"dsvc_drill_{suffix}"
    env = {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "unused-with-trust-auth",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": database,
        "RABBITMQ_DEFAULT_USER": "guest",
        "RABBITMQ_DEFAULT_PASSWORD": "guest",
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": "5672",
        "RABBITMQ_VHOST": "/",
        "UPLOADED_FILES_DIR_PATH": str(tmp_path_factory.mktemp("uploads")),
        "TASK_QUEUE": f"drill-{suffix}",
        "MAX_UPLOAD_SIZE_BYTES": str(64 * 1024 * 1024),
        "TASK_TIME_LIMIT_SECONDS": "300",
        "WORKER_CONCURRENCY": "1",
        "LONG_POLL_MAX_SECONDS": "30",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        migrated = subprocess.run(
            [sys.executable, "-m", "desbordante_service", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        yield env
    finally:
        _delete_queue(env["TASK_QUEUE"])
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture
def uploads(service_env: dict[str, str]) -> Path:
    return Path(service_env["UPLOADED_FILES_DIR_PATH"])


@pytest.fixture
def dsn(service_env: dict[str, str]) -> str:
    return f"{ADMIN_DSN} dbname={service_env['POSTGRES_DB']}"


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as connection:
        yield connection


Launcher = Callable[..., ServiceProcess]


@pytest.fixture
def launch(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable]:
    """Start `Api` or `Worker` processes (env overrides as keywords); all stopped at the end."""
    started: list[ServiceProcess] = []

    def _launch(kind: type[Api] | type[Worker], **overrides: str):
        log = tmp_path / f"{kind.__name__.lower()}-{len(started)}.log"
        process = kind({**service_env, **overrides}, log)
        started.append(process)
        return process

    yield _launch
    for process in started:
        process.stop()


@pytest.fixture
def api(launch: Callable) -> Api:
    return launch(Api)


@pytest.fixture
def worker(launch: Callable) -> Worker:
    return launch(Worker)
