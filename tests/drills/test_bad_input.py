"""20 bad requests of every kind in parallel with good traffic: good traffic unaffected, no 500."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serviceprocs import Api, Worker, wait_for

from .calls import CITIES, create_task, expected_result, stored, upload, upload_ok, wait_final

pytestmark = pytest.mark.timeout(300)

REPEAT = 20
MAX_UPLOAD = 1024 * 1024
GOOD_ROUNDS = 12
Bad = Callable[[httpx.Client, str], httpx.Response | int]  # int: no answer expected (0)


def _truncated_body(client: httpx.Client, _: str) -> int:
    """Announce a 100 kB multipart body, send 1 kB, hang up (no answer expected: 0)."""
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            "POST /api/v1/datasets HTTP/1.1\r\nHost: drill\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n"
            '--x\r\nContent-Disposition: form-data; name="file"; filename="t.csv"\r\n\r\n'
        )
        sock.sendall(head.encode() + b"a,b\n1,2\n" * 128)
    return 0


def _post_raw(path: str, content: bytes, content_type: str) -> Bad:
    return lambda c, _: c.post(path, content=content, headers={"Content-Type": content_type})


def _upload(content: bytes, **form: str) -> Bad:
    return lambda c, _: upload(c, "bad.csv", content, **form)


def _task(**body: object) -> Bad:
    return lambda c, dataset: c.post("/api/v1/tasks", json={"dataset_id": dataset, **body})


UNKNOWN = str(uuid.uuid4())
BAD_REQUESTS: dict[str, tuple[Bad, int]] = {
    "JSON instead of multipart": (_post_raw("/api/v1/datasets", b"{}", "application/json"), 415),
    "malformed multipart": (
        _post_raw("/api/v1/datasets", b"garbage\r\n", "multipart/form-data; boundary=b"),
        400,
    ),
    "multipart without a file": (
        _post_raw(
            "/api/v1/datasets",
            b'--b\r\nContent-Disposition: form-data; name="separator"\r\n\r\n,\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
        422,
    ),
    "empty file": (_upload(b""), 422),
    "binary file": (_upload(bytes(range(256)) * 64), 422),
    "file over the size cap": (_upload(b"a,b\n" + b"1,2\n" * (MAX_UPLOAD // 4 + 10)), 413),
    "two-character separator": (_upload(CITIES, separator=";;"), 422),
    "has_header not a boolean": (_upload(CITIES, has_header="maybe"), 422),
    "unknown form field": (_upload(CITIES, colour="red"), 422),
    "truncated body, client hangs up": (_truncated_body, 0),
    "unknown primitive": (_task(primitive="mvd"), 422),
    "unknown algorithm": (_task(primitive="fd", algorithm="Nope"), 422),
    "unknown config option": (_task(primitive="fd", config={"colour": 1}), 422),
    "config value of the wrong type": (_task(primitive="fd", config={"max_lhs": "2"}), 422),
    "time limit over the maximum": (_task(primitive="fd", time_limit=10**6), 422),
    "unknown dataset": (lambda c, _: _task(primitive="fd")(c, UNKNOWN), 404),
    "body not JSON": (_post_raw("/api/v1/tasks", b"{nope", "application/json"), 422),
    "task id not a UUID": (lambda c, _: c.get("/api/v1/tasks/not-a-uuid"), 422),
    "unknown task": (lambda c, _: c.get(f"/api/v1/tasks/{UNKNOWN}"), 404),
    "negative long-poll wait": (lambda c, _: c.get(f"/api/v1/tasks/{UNKNOWN}?wait=-1"), 422),
    "delete an unknown dataset": (lambda c, _: c.delete(f"/api/v1/datasets/{UNKNOWN}"), 404),
}


def _good_round(client: httpx.Client) -> list[tuple[int, dict]]:
    """Upload, create a task, long-poll it: the statuses and the final task."""
    answer = upload(client, "good.csv", CITIES)
    if answer.status_code != 201:
        return [(answer.status_code, {})]
    task_id = create_task(client, answer.json()["id"])
    return [(201, {}), (202, {}), (200, wait_final(client, task_id, timeout=60))]


def test_bad_input_does_not_disturb_good_traffic(launch, db, uploads, tmp_path) -> None:
    api = launch(Api, MAX_UPLOAD_SIZE_BYTES=str(MAX_UPLOAD))
    launch(Worker)
    dataset = upload_ok(api.client, "cities.csv", CITIES)["id"]
    jobs = [(kind, call) for kind, (call, _) in BAD_REQUESTS.items() for _ in range(REPEAT)]

    def _bad(job: tuple[str, Bad]) -> tuple[str, int | str]:
        kind, call = job
        with httpx.Client(base_url=api.url, timeout=30) as client:
            try:
                answer = call(client, dataset)
            except httpx.HTTPError as exc:
                return kind, f"{type(exc).__name__}: {exc}"
        return kind, answer if isinstance(answer, int) else answer.status_code

    def _good() -> list[tuple[int, dict]]:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            return [step for _ in range(GOOD_ROUNDS) for step in _good_round(client)]

    with ThreadPoolExecutor(max_workers=10) as pool:
        good = [pool.submit(_good) for _ in range(2)]
        bad = list(pool.map(_bad, jobs))
        good_steps = [step for future in good for step in future.result(timeout=240)]

    wrong = {(kind, got) for kind, got in bad if got != BAD_REQUESTS[kind][1]}
    assert not wrong, sorted(wrong, key=str)
    expected = expected_result(tmp_path, CITIES)
    assert [status for status, _ in good_steps] == [201, 202, 200] * GOOD_ROUNDS * 2
    finals = [task for status, task in good_steps if status == 200]
    assert all(t["status"] == "succeeded" and t["result"] == expected for t in finals)
    assert "500 Internal Server Error" not in api.output()
    wait_for(lambda: not stored(db, uploads)["incoming"], 30, "no part file left")
    state = stored(db, uploads)
    assert state["rows"] == len(state["datasets"])
