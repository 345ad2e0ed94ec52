"""API stopped with SIGTERM during an upload: no partial file, no row; short requests finish."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from serviceprocs import wait_for

from .calls import CITIES, create_task, stored, upload_ok

pytestmark = pytest.mark.timeout(180)

BOUNDARY = "drill-boundary-7c1f"
CHUNK = b"1,2,3\n" * 10_000
MAX_CHUNKS = 1500  # bounded: ~90 MB at most, far beyond the time the drill needs
SHORT_REQUESTS = 4


def slow_multipart(stop: threading.Event, pause: float = 0.02) -> Iterator[bytes]:
    """A multipart body that trickles a CSV until STOP is set (never completes on its own)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.csv"\r\n'
        "Content-Type: text/csv\r\n\r\na,b,c\n"
    ).encode()
    for _ in range(MAX_CHUNKS):
        if stop.wait(pause):
            return
        yield CHUNK


def _client_connections(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr.port == port)


def test_sigterm_during_upload_leaves_nothing_and_finishes_short_requests(api, db, uploads) -> None:
    dataset = upload_ok(api.client, "cities.csv", CITIES)["id"]
    task_id = create_task(api.client, dataset)  # stays queued: no worker in this drill
    before = stored(db, uploads)
    stop = threading.Event()
    content_type = f"multipart/form-data; boundary={BOUNDARY}"

    def _upload() -> httpx.Response | Exception:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            try:
                return client.post(
                    "/api/v1/datasets",
                    content=slow_multipart(stop),
                    headers={"Content-Type": content_type},
                )
            except httpx.HTTPError as exc:
                return exc

    def _short() -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            return client.get(f"/api/v1/tasks/{task_id}", params={"wait": 2})

    with ThreadPoolExecutor(max_workers=1 + SHORT_REQUESTS) as pool:
        uploading = pool.submit(_upload)
        wait_for(lambda: stored(db, uploads)["incoming"], 30, "the upload's part file")
        shorts = [pool.submit(_short) for _ in range(SHORT_REQUESTS)]
        wait_for(
            lambda: _client_connections(api.pid, api.port) >= 1 + SHORT_REQUESTS,
            10,
            "the short requests to be connected",
        )
        api.terminate()
        try:
            exit_code = api.process.wait(timeout=60)
        finally:
            stop.set()
        answers = [future.result(timeout=60) for future in shorts]
        uploaded = uploading.result(timeout=60)

    # uvicorn re-raises the signal once its graceful shutdown is complete.
    assert exit_code in (0, -signal.SIGTERM), api.output()[-2000:]
    assert "Application shutdown complete" in api.output()
    assert [a.status_code for a in answers] == [200] * SHORT_REQUESTS
    assert all(a.json()["id"] == task_id for a in answers)
    print("upload answer:", uploaded if isinstance(uploaded, Exception) else uploaded.text)
    if isinstance(uploaded, httpx.Response):
        assert uploaded.status_code != 201, uploaded.text
    assert stored(db, uploads) == before
