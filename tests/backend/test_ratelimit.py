"""The per-client rate limit of POST /datasets and POST /tasks, on the real API process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from serviceprocs import Api

PER_MINUTE = 3
CITIES = b"id,city\n1,A\n2,B\n"
UNKNOWN_TASK = {"dataset_id": str(uuid.UUID(int=5)), "primitive": "fd"}


@pytest.fixture
def server(service_env: dict[str, str], tmp_path) -> Iterator[Api]:
    """One uvicorn process (the limit is per process), a fresh budget per test."""
    api = Api({**service_env, "RATE_LIMIT_PER_MINUTE": str(PER_MINUTE)}, tmp_path / "api.log")
    yield api
    api.stop()


def test_over_the_limit_is_429_with_retry_after_and_stores_nothing(server, stored) -> None:
    under = [server.client.post("/api/v1/tasks", json=UNKNOWN_TASK) for _ in range(PER_MINUTE)]
    before = stored.snapshot()

    task = server.client.post("/api/v1/tasks", json=UNKNOWN_TASK)
    upload = server.client.post("/api/v1/datasets", files={"file": ("c.csv", CITIES)})

    assert [r.status_code for r in under] == [404] * PER_MINUTE  # counted, then answered
    for refused in (task, upload):  # one budget for both write endpoints
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["detail"] == (
            f"too many requests: at most {PER_MINUTE} uploads and task creations per minute "
            f"per client (RATE_LIMIT_PER_MINUTE); retry in {refused.headers['retry-after']} "
            "seconds"
        )
    assert stored.snapshot() == before


def test_reads_are_not_limited(server) -> None:
    for _ in range(PER_MINUTE):
        server.client.post("/api/v1/tasks", json=UNKNOWN_TASK)

    reads = [server.client.get("/api/v1/datasets").status_code for _ in range(2 * PER_MINUTE)]

    assert reads == [200] * (2 * PER_MINUTE)
    assert server.client.post("/api/v1/tasks", json=UNKNOWN_TASK).status_code == 429


def test_each_client_has_its_own_budget(server) -> None:
    """Behind the edge the client is the address in X-Forwarded-For."""
    first = {"X-Forwarded-For": "203.0.113.1"}
    second = {"X-Forwarded-For": "203.0.113.2"}
    for _ in range(PER_MINUTE):
        server.client.post("/api/v1/tasks", json=UNKNOWN_TASK, headers=first)

    limited = server.client.post("/api/v1/tasks", json=UNKNOWN_TASK, headers=first)
    other = server.client.post("/api/v1/tasks", json=UNKNOWN_TASK, headers=second)

    assert limited.status_code == 429
    assert other.status_code == 404


def test_no_limit_by_default(api) -> None:
    """The in-process app runs with the default RATE_LIMIT_PER_MINUTE=0."""
    statuses = {api.client.post("/api/v1/tasks", json=UNKNOWN_TASK).status_code for _ in range(50)}

    assert statuses == {404}
