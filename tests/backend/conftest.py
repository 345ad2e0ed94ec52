"""Backend tests run against the machine's real PostgreSQL and RabbitMQ.

A fresh database (schema built by the real `migrate` entry point), a fresh upload directory and
a dedicated queue are created per test run and removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from servicekit import (
    ADMIN_DSN,
    backend_env,
    create_database,
    drop_database,
    migrated_database,
    scalar,
)
from serviceprocs import Worker

DATA = Path(__file__).parent / "data"


def _clear_caches() -> None:
    from desbordante_service.db import _session_factory, get_engine
    from desbordante_service.settings import get_settings
    from desbordante_service.worker.app import get_celery

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_settings, get_engine, _session_factory, get_celery):
        cached.cache_clear()


@pytest.fixture
def scratch_database(service_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """An extra empty database; yields the service environment pointing at it."""
    name = f"{service_env['POSTGRES_DB']}_scratch"
    create_database(name)
    yield {**service_env, "POSTGRES_DB": name}
    drop_database(name)


def _connect(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(f"{ADMIN_DSN} dbname={env['POSTGRES_DB']}", autocommit=True)


@pytest.fixture
def connect():
    """Open an admin connection to the database of a service environment."""
    return _connect


def _new_env(tmp_path_factory: pytest.TempPathFactory, kind: str) -> dict[str, str]:
    suffix = secrets.token_hex(4)
    return backend_env(
        f"dsvc_{kind}_{suffix}",
        tmp_path_factory.mktemp("uploads"),
        f"{kind}-{suffix}",
        MAX_UPLOAD_SIZE_BYTES=str(1024 * 1024),
        TASK_TIME_LIMIT_SECONDS="120",
        FLOWER_PASSWORD="unused",
    )


@pytest.fixture(scope="module")
def own_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A database, upload directory and queue of this test module alone (exact counts)."""
    env = _new_env(tmp_path_factory, "own")
    with migrated_database(env):
        yield env


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = _new_env(tmp_path_factory, "test")
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    _clear_caches()
    try:
        with migrated_database(env):
            yield env
    finally:
        _clear_caches()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def app(service_env: dict[str, str]):
    from desbordante_service.api.app import create_app

    return create_app()


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def uploads(service_env: dict[str, str]) -> Path:
    return Path(service_env["UPLOADED_FILES_DIR_PATH"])


@pytest.fixture
def db(service_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    with _connect(service_env) as connection:
        yield connection


class Stored:
    """What is on disk and in the database, to assert that a rejected request left nothing."""

    def __init__(self, db: psycopg.Connection, uploads: Path) -> None:
        self.db = db
        self.uploads = uploads

    def snapshot(self) -> tuple[int, int, list[str]]:
        datasets = scalar(self.db, "SELECT count(*) FROM datasets")
        tasks = scalar(self.db, "SELECT count(*) FROM profiling_tasks")
        files = sorted(str(p.relative_to(self.uploads)) for p in self.uploads.rglob("*.*"))
        return datasets, tasks, files


@pytest.fixture
def stored(db: psycopg.Connection, uploads: Path) -> Stored:
    return Stored(db, uploads)


class Api:
    """The API under test (in-process TestClient) with the steps tests repeat."""

    def __init__(self, client) -> None:
        self.client = client

    def upload(self, name: str, content: bytes, **form: str):
        files = {"file": (name, content, "text/csv")}
        return self.client.post("/api/v1/datasets", files=files, data=form)

    def upload_file(self, filename: str, **form: str) -> dict:
        response = self.upload(filename, (DATA / filename).read_bytes(), **form)
        assert response.status_code == 201, response.text
        return response.json()

    def create_task(self, dataset_id: str, primitive: str, **extra: object):
        body = {"dataset_id": dataset_id, "primitive": primitive, **extra}
        return self.client.post("/api/v1/tasks", json=body)

    def run_task(self, dataset_id: str, primitive: str, **extra: object) -> dict:
        response = self.create_task(dataset_id, primitive, **extra)
        assert response.status_code == 202, response.text
        return self.wait_final(response.json()["id"])

    def wait_final(self, task_id: str, timeout: float = 90) -> dict:
        """Long-poll until the task is final; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        task: dict = {}
        while time.monotonic() < deadline:
            task = self.client.get(f"/api/v1/tasks/{task_id}", params={"wait": 10}).json()
            if task["status"] in ("succeeded", "failed"):
                return task
        raise AssertionError(f"task {task_id} not final after {timeout}s: {task}")


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def settings_with(app) -> Iterator:
    """Override settings of the in-process API for one test, e.g. `settings_with(X=1)`."""
    from desbordante_service.settings import get_settings

    def _override(**values: object) -> None:
        changed = get_settings().model_copy(update=values)
        app.dependency_overrides[get_settings] = lambda: changed

    yield _override
    app.dependency_overrides.pop(get_settings, None)


@pytest.fixture
def start_worker(service_env: dict[str, str], tmp_path: Path) -> Iterator:
    workers: list[Worker] = []

    def _start() -> Worker:
        worker = Worker(service_env, tmp_path / f"worker-{len(workers)}.log")  # waits for ready
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker) -> Worker:
    return start_worker()
