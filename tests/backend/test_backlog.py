"""The queue-depth limit on the real API process: 202 below MAX_PENDING_TASKS, 503 at it.

No worker runs here, so every created task stays queued. The module has its own database, so
the backlog is exactly what these tests create.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from servicekit import scalar
from serviceprocs import Api

LIMIT = 3
RETRY_AFTER = 7
CITIES = b"id,city\n1,A\n2,B\n"
FULL = (
    f"the task queue is full ({LIMIT} tasks queued or running, MAX_PENDING_TASKS={LIMIT}); "
    f"retry in {RETRY_AFTER} seconds"
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Two uvicorn processes, so that concurrent creations really race on the database."""
    env = {
        **own_env,
        "MAX_PENDING_TASKS": str(LIMIT),
        "QUEUE_FULL_RETRY_AFTER_SECONDS": str(RETRY_AFTER),
        "API_WORKERS": "2",
    }
    api = Api(env, tmp_path_factory.mktemp("api") / "api.log")
    yield api
    api.stop()


@pytest.fixture
def own_db(own_env: dict[str, str], connect) -> Iterator[psycopg.Connection]:
    with connect(own_env) as connection:
        yield connection
        connection.execute("UPDATE profiling_tasks SET status = 'failed' WHERE status <> 'failed'")


@pytest.fixture
def dataset(server: Api) -> str:
    response = server.client.post("/api/v1/datasets", files={"file": ("c.csv", CITIES)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _create(client: httpx.Client, dataset: str) -> httpx.Response:
    return client.post("/api/v1/tasks", json={"dataset_id": dataset, "primitive": "fd"})


def _pending(db: psycopg.Connection) -> int:
    query = "SELECT count(*) FROM profiling_tasks WHERE status IN ('queued', 'running')"
    return scalar(db, query)


def test_202_below_the_limit_503_with_retry_after_at_it(server, own_db, dataset) -> None:
    accepted = [_create(server.client, dataset) for _ in range(LIMIT)]

    refused = _create(server.client, dataset)

    assert [r.status_code for r in accepted] == [202] * LIMIT
    assert "retry-after" not in accepted[-1].headers
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(RETRY_AFTER)
    assert refused.json() == {"detail": FULL}
    assert _pending(own_db) == LIMIT  # the refused task was not stored


def test_a_finished_task_frees_its_place(server, own_db, dataset) -> None:
    ids = [_create(server.client, dataset).json()["id"] for _ in range(LIMIT)]
    assert _create(server.client, dataset).status_code == 503

    own_db.execute("UPDATE profiling_tasks SET status = 'succeeded' WHERE id = %s", (ids[0],))

    assert _create(server.client, dataset).status_code == 202
    assert _create(server.client, dataset).status_code == 503


def test_running_tasks_count_but_not_those_whose_worker_vanished(server, own_db, dataset) -> None:
    ids = [_create(server.client, dataset).json()["id"] for _ in range(LIMIT)]
    own_db.execute(
        "UPDATE profiling_tasks SET status = 'running', attempts = 1, started_at = now()"
        " WHERE id = ANY(%s::uuid[])",
        (ids,),
    )
    assert _create(server.client, dataset).status_code == 503

    # Past its time limit (120 s) plus the grace minute: its worker is gone, it holds no place.
    own_db.execute(
        "UPDATE profiling_tasks SET started_at = now() - interval '10 minutes' WHERE id = %s",
        (ids[0],),
    )

    assert _create(server.client, dataset).status_code == 202


def test_concurrent_creations_at_the_boundary_never_exceed_the_limit(
    server, own_db, dataset
) -> None:
    clients = 12
    barrier = threading.Barrier(clients, timeout=30)
    statuses: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.get("/health/live")  # connected before the race starts
            barrier.wait()
            status = _create(client, dataset).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=create) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [202] * LIMIT + [503] * (clients - LIMIT)
    assert _pending(own_db) == LIMIT


def test_503_stores_nothing(server, own_db, dataset, own_env) -> None:
    for _ in range(LIMIT):
        _create(server.client, dataset)
    tasks = scalar(own_db, "SELECT count(*) FROM profiling_tasks")
    files = sorted(Path(own_env["UPLOADED_FILES_DIR_PATH"]).rglob("*"))

    assert _create(server.client, dataset).status_code == 503

    assert scalar(own_db, "SELECT count(*) FROM profiling_tasks") == tasks
    assert sorted(Path(own_env["UPLOADED_FILES_DIR_PATH"]).rglob("*")) == files
