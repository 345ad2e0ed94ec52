"""Shared by the suites that run the backend on this machine's real services (backend, drills).

Each run gets its own database (schema built by the real `migrate` entry point), upload
directory and queue, all removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres")
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def backend_env(database: str, uploads: Path, queue: str, **overrides: str) -> dict[str, str]:
    """Backend variables pointing at the machine's PostgreSQL (trust auth) and RabbitMQ."""
    return {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "unused-with-trust-auth",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": database,
        "RABBITMQ_DEFAULT_USER": "guest",
        "RABBITMQ_DEFAULT_PASSWORD": "guest",
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": "5672",
        "UPLOADED_FILES_DIR_PATH": str(uploads),
        "TASK_QUEUE": queue,
        "WORKER_CONCURRENCY": "1",
        "LONG_POLL_MAX_SECONDS": "30",
        **overrides,
    }


def admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


def scalar(db: psycopg.Connection, query: LiteralString, params: Sequence[Any] = ()) -> Any:
    """The first value of the row QUERY returns (a count, a status); fails when there is none."""
    row = db.execute(query, params).fetchone()
    assert row is not None, f"no row from {query}"
    return row[0]


def create_database(name: str) -> None:
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_queue(queue: str) -> None:
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=10) as connection:
        connection.channel().queue_delete(queue)


def run_service(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the real `desbordante-service` entry point."""
    return subprocess.run(
        [sys.executable, "-m", "desbordante_service", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def migrated_database(env: dict[str, str]) -> Iterator[None]:
    """Create env's database, migrate it; afterwards drop it and delete env's queue."""
    create_database(env["POSTGRES_DB"])
    try:
        migrated = run_service("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        yield
    finally:
        delete_queue(env["TASK_QUEUE"])
        drop_database(env["POSTGRES_DB"])
