"""POST/GET /api/v1/tasks: validation, enqueueing, long-poll (no worker runs here)."""

from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery

CITIES = b"id,city,zip,name\n1,A,10,x\n2,A,10,y\n3,B,20,x\n4,C,20,y\n"


@pytest.fixture
def dataset(api) -> dict:
    return api.upload("cities.csv", CITIES).json()


def test_create_answers_202_with_location(api, dataset, db) -> None:
    response = api.create_task(dataset["id"], "fd", config={"max_lhs": 2})

    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "queued"
    assert task["algorithm"] == "HyFD"
    assert task["config"] == {"max_lhs": 2, "threads": 1}
    assert task["time_limit"] == 120
    assert response.headers["location"].endswith(f"/api/v1/tasks/{task['id']}")
    assert api.client.get(response.headers["location"]).json()["id"] == task["id"]
    row = db.execute("SELECT status FROM profiling_tasks WHERE id = %s", (task["id"],)).fetchone()
    assert row == ("queued",)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"primitive": "xyz"}, "primitive: unknown primitive 'xyz'; allowed: afd, fd, ind, ucc"),
        ({"primitive": "fd", "algorithm": "Nope"}, "algorithm: unknown algorithm 'Nope' for fd"),
        (
            {"primitive": "fd", "config": {"bogus": 1}},
            "config.bogus: unknown option for fd/HyFD; allowed options: max_lhs, threads",
        ),
        ({"primitive": "fd", "config": {"max_lhs": "3"}}, "config.max_lhs: Input should be"),
        ({"primitive": "fd", "config": {"max_lhs": 0}}, "config.max_lhs: Input should be greater"),
        ({"primitive": "afd", "config": {"error": 1.5}}, "config.error: Input should be less"),
        (
            {"primitive": "afd", "config": {"afd_error_measure": "x"}},
            "config.afd_error_measure: Input should be 'g1', 'pdep', 'tau', 'mu_plus' or 'rho'",
        ),
        ({"primitive": "ucc", "algorithm": "HPIValid", "config": {"threads": 2}}, "allowed"),
        ({"primitive": "fd", "time_limit": 100000}, "time_limit: must be at most 120"),
        ({"primitive": "fd", "time_limit": 0}, "time_limit: Input should be greater than"),
        ({"primitive": "fd", "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"primitive": "fd", "config": []}, "config: Input should be a valid dictionary"),
    ],
)
def test_invalid_requests_are_422_and_store_nothing(api, dataset, stored, body, detail) -> None:
    before = stored.snapshot()

    response = api.client.post("/api/v1/tasks", json={"dataset_id": dataset["id"], **body})

    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]
    assert stored.snapshot() == before


def test_missing_dataset_id_and_bad_json(api, stored) -> None:
    before = stored.snapshot()

    missing = api.client.post("/api/v1/tasks", json={"primitive": "fd"})
    broken = api.client.post(
        "/api/v1/tasks", content=b"{", headers={"content-type": "application/json"}
    )

    assert missing.status_code == 422
    assert missing.json()["detail"] == "dataset_id: Field required"
    assert broken.status_code == 422
    assert stored.snapshot() == before


def test_unknown_dataset_is_404(api, stored) -> None:
    before = stored.snapshot()

    response = api.create_task(str(uuid.UUID(int=7)), "fd")

    assert response.status_code == 404
    assert response.json()["detail"] == f"dataset {uuid.UUID(int=7)} not found"
    assert stored.snapshot() == before


def test_unknown_and_malformed_task_ids(api) -> None:
    unknown = api.client.get(f"/api/v1/tasks/{uuid.UUID(int=3)}")
    malformed = api.client.get("/api/v1/tasks/123")
    negative_wait = api.client.get(f"/api/v1/tasks/{uuid.UUID(int=3)}?wait=-1")

    assert unknown.status_code == 404
    assert malformed.status_code == 422
    assert malformed.json()["detail"].startswith("task_id: Input should be a valid UUID")
    assert negative_wait.status_code == 422


def test_long_poll_returns_the_queued_task_when_time_runs_out(api, dataset) -> None:
    task = api.create_task(dataset["id"], "ucc").json()
    started = time.monotonic()

    polled = api.client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 0.5}).json()

    assert polled["status"] == "queued"
    assert time.monotonic() - started >= 0.5


def test_list_tasks_filters_by_dataset(api, dataset) -> None:
    task = api.create_task(dataset["id"], "ind").json()

    listed = api.client.get("/api/v1/tasks", params={"dataset_id": dataset["id"]}).json()

    assert [t["id"] for t in listed] == [task["id"]]


def test_primitives_lists_algorithms_and_options(api) -> None:
    primitives = api.client.get("/api/v1/tasks/primitives").json()

    assert set(primitives) == {"fd", "afd", "ucc", "ind"}
    assert primitives["fd"]["default_algorithm"] == "HyFD"
    assert "max_lhs" in primitives["fd"]["algorithms"]["HyFD"]["properties"]


def test_unreachable_broker_is_503_and_keeps_no_task(app, api, dataset, stored) -> None:
    """A real Celery app pointed at a closed loopback port: publishing fails for real."""
    from desbordante_service.api.deps import _publisher

    dead = Celery(broker="amqp://guest:guest@127.0.0.1:1//")
    dead.conf.broker_connection_timeout = 1
    dead.conf.broker_connection_max_retries = 0

    def publish(task_id: uuid.UUID, time_limit: int) -> None:
        dead.send_task("desbordante.profile", args=[str(task_id)], retry=False)

    before = stored.snapshot()
    app.dependency_overrides[_publisher] = lambda: publish
    try:
        response = api.create_task(dataset["id"], "fd")
    finally:
        app.dependency_overrides.clear()

    assert response.status_code == 503
    assert response.json()["detail"] == "the message broker is unavailable; retry later"
    assert response.headers["retry-after"] == "5"
    assert stored.snapshot() == before
