"""HTTP client steps of the benchmarks: streamed upload, create a task, long-poll it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BOUNDARY = "bench-boundary-5d2e9a"
READ_CHUNK = 1024 * 1024
FINAL = ("succeeded", "failed")


class BenchError(Exception):
    """An unexpected HTTP answer during a benchmark."""


def _head(path: Path) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def _multipart(path: Path) -> Iterator[bytes]:
    """The multipart body of PATH as a stream of chunks (the file is never read whole)."""
    yield _head(path)
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk
    yield TAIL


def multipart_length(path: Path) -> int:
    return len(_head(path)) + path.stat().st_size + len(TAIL)


def upload(client: httpx.Client, path: Path) -> dict:
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(multipart_length(path)),
    }
    response = client.post("/api/v1/datasets", content=_multipart(path), headers=headers)
    if response.status_code != 201:
        raise BenchError(f"upload of {path.name}: HTTP {response.status_code} {response.text}")
    return response.json()


def create_task(client: httpx.Client, dataset_id: str, algorithm: str = "HyFD") -> str:
    body = {"dataset_id": dataset_id, "primitive": "fd", "algorithm": algorithm}
    response = client.post("/api/v1/tasks", json=body)
    if response.status_code != 202:
        raise BenchError(f"create task: HTTP {response.status_code} {response.text}")
    return response.json()["id"]


def wait_final(client: httpx.Client, task_id: str, timeout: float = 600) -> dict:
    """Long-poll (GET ?wait=30) until the task is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/tasks/{task_id}", params={"wait": 30})
        if response.status_code != 200:
            raise BenchError(f"get task: HTTP {response.status_code} {response.text}")
        task = response.json()
        if task["status"] in FINAL:
            return task
    raise BenchError(f"task {task_id} not final within {timeout:.0f}s")


def delete_dataset(client: httpx.Client, dataset_id: str) -> None:
    client.delete(f"/api/v1/datasets/{dataset_id}")
