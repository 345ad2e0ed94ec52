"""The HTTP calls the drills repeat, data generators and what is stored on disk and in the DB."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TypedDict

import httpx
import psycopg
from servicekit import scalar

FINAL = ("succeeded", "failed")
CITIES = (
    b"id,city,zip,name\n1,Paris,75001,Ann\n2,Paris,75001,Bob\n3,Lyon,69001,Ann\n4,Nice,06000,Cy\n"
)


def random_csv(columns: int, rows: int, values: int, seed: int) -> bytes:
    """A header c0..cN and ROWS rows of integers 0..VALUES, reproducible from SEED."""
    rng = random.Random(seed)
    lines = [",".join(f"c{i}" for i in range(columns))]
    lines += [",".join(str(rng.randint(0, values)) for _ in range(columns)) for _ in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def upload(client: httpx.Client, name: str, content: bytes, **form: str) -> httpx.Response:
    return client.post("/api/v1/datasets", files={"file": (name, content, "text/csv")}, data=form)


def upload_ok(client: httpx.Client, name: str, content: bytes) -> dict:
    response = upload(client, name, content)
    assert response.status_code == 201, response.text
    return response.json()


def create_task(client: httpx.Client, dataset_id: str, primitive: str = "fd", **extra) -> str:
    response = client.post(
        "/api/v1/tasks", json={"dataset_id": dataset_id, "primitive": primitive, **extra}
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_final(client: httpx.Client, task_id: str, timeout: float = 120) -> dict:
    """Long-poll the task until it is final; AssertionError after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    task: dict = {}
    while time.monotonic() < deadline:
        wait = max(1, min(20, int(deadline - time.monotonic())))
        response = client.get(f"/api/v1/tasks/{task_id}", params={"wait": wait})
        assert response.status_code == 200, response.text
        task = response.json()
        if task["status"] in FINAL:
            return task
    raise AssertionError(f"task {task_id} not final after {timeout:.0f}s: {task}")


class Stored(TypedDict):
    rows: int
    incoming: list[str]
    datasets: list[str]


def stored(db: psycopg.Connection, uploads: Path) -> Stored:
    """Rows and files: what a rejected or cancelled upload must not change."""
    return {
        "rows": scalar(db, "SELECT count(*) FROM datasets"),
        "incoming": sorted(p.name for p in (uploads / "incoming").glob("*") if p.is_file()),
        "datasets": sorted(p.name for p in (uploads / "datasets").glob("*") if p.is_file()),
    }


def expected_result(tmp_path: Path, content: bytes, primitive: str = "fd") -> dict:
    """The same primitive run in this process with its default algorithm (the reference)."""
    from desbordante_service.profiling import runner
    from desbordante_service.profiling.primitives import PRIMITIVES

    path = tmp_path / f"reference-{len(content)}.csv"
    path.write_bytes(content)
    columns = content.split(b"\n", 1)[0].decode().split(",")
    algorithm = PRIMITIVES[primitive].default
    return runner.run(primitive, algorithm, {}, path, ",", True, columns)
