"""PostgreSQL restarted under the API: 503 while down, recovery without an API restart."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from serviceprocs import wait_for

from .calls import CITIES, stored, upload
from .services import postgres_stopped
from .traffic import Traffic

pytestmark = pytest.mark.timeout(300)


def _ready(client: httpx.Client) -> httpx.Response:
    return client.get("/health/ready", timeout=15)


def test_database_restart_gives_503_then_recovers_and_loses_no_upload(api, dsn, uploads) -> None:
    api_pid = api.pid
    with httpx.Client(base_url=api.url, timeout=30) as client:
        traffic = Traffic(lambda c: upload(c, "cities.csv", CITIES), client)
        with traffic:
            wait_for(lambda: traffic.count(201) >= 3, 30, "uploads before the restart")
            with postgres_stopped():
                down = wait_for(
                    lambda: r if (r := _ready(api.client)).status_code == 503 else None,
                    30,
                    "503 ready",
                )
                stopped_at = time.monotonic()
                wait_for(lambda: traffic.count(503, stopped_at) >= 2, 30, "503 uploads")
            restarted_at = time.monotonic()
            wait_for(lambda: _ready(api.client).status_code == 200, 60, "ready again")
            wait_for(lambda: traffic.count(201, restarted_at) >= 3, 60, "uploads after restart")

    assert down.json()["database"].startswith("error")
    assert down.json()["broker"] == "ok"
    assert api.alive() and api.pid == api_pid, "the API was restarted"
    assert traffic.statuses() <= {201, 503}, [a for a in traffic.answers if a.status != 201]
    unavailable = [a.body for a in traffic.answers if a.status == 503]
    assert all("unavailable" in body["detail"] for body in unavailable), unavailable
    # Every accepted upload is stored (row and file); nothing else is.
    accepted = [a.body["id"] for a in traffic.answers if a.status == 201]
    for dataset_id in accepted:
        assert api.client.get(f"/api/v1/datasets/{dataset_id}").status_code == 200
    with psycopg.connect(dsn, autocommit=True) as db:  # a new connection: the old one died
        state = stored(db, uploads)
    assert {f"{d}.csv" for d in accepted} <= set(state["datasets"])
    assert state["rows"] == len(state["datasets"])
    assert state["incoming"] == []
