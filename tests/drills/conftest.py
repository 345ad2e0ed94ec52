"""Drill fixtures: a fresh database, upload directory and queue per run; real processes.

Every API gets its own free loopback port (never 8000/5555, which the local stack uses) and
every process started by a test is stopped when the test ends, whatever happened.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from servicekit import ADMIN_DSN, backend_env, migrated_database
from serviceprocs import Api, ServiceProcess, Worker


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Backend variables of this run: own database, uploads and queue; schema migrated."""
    suffix = secrets.token_hex(4)
    env = backend_env(
        f"dsvc_drill_{suffix}",
        tmp_path_factory.mktemp("uploads"),
        f"drill-{suffix}",
        MAX_UPLOAD_SIZE_BYTES=str(64 * 1024 * 1024),
        TASK_TIME_LIMIT_SECONDS="300",
        SHUTDOWN_GRACE_SECONDS="5",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    with migrated_database(env):
        yield env


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
