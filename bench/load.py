"""Load: concurrent clients creating `fd` tasks on a small dataset for a bounded time.

Loopback only; bounded in clients, duration and tasks. Each client creates a task and
long-polls it to a final state; at the end every created task must be final (none lost).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench import client
from bench.data import Dataset
from bench.report import Check, Result
from desbordante_ops.core.settings import EnvConfig

CLIENTS = 16
DURATION_SECONDS = 20
MAX_TASKS = 5000
DRAIN_SECONDS = 120
SMALL = Dataset("load", columns=5, rows=200, values=5, seed=4)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run(cfg: EnvConfig, runs: int) -> Result:
    base = cfg.toolkit.API_BASE_URL
    with httpx.Client(base_url=base, timeout=60) as http:
        dataset = client.upload(http, SMALL.ensure())["id"]
    created: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + DURATION_SECONDS

    def _client() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline and len(created) < MAX_TASKS:
                started = time.perf_counter()
                try:
                    task_id = client.create_task(http, dataset)
                    with lock:
                        created.append(task_id)
                    task = client.wait_final(http, task_id, timeout=DRAIN_SECONDS)
                    if task["status"] != "succeeded":
                        raise client.BenchError(f"task {task['status']}: {task['error']}")
                except (client.BenchError, httpx.HTTPError) as exc:
                    with lock:
                        errors.append(str(exc)[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        for future in [pool.submit(_client) for _ in range(CLIENTS)]:
            future.result(timeout=DURATION_SECONDS + DRAIN_SECONDS + 60)
    elapsed = time.monotonic() - started
    lost = _not_final(base, created)
    rate = len(latencies) / elapsed
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    data = {
        "clients": CLIENTS,
        "duration_s": elapsed,
        "worker_concurrency": cfg.backend.WORKER_CONCURRENCY,
        "created": len(created),
        "succeeded": len(latencies),
        "tasks_per_s": rate,
        "p50_s": p50,
        "p99_s": p99,
        "errors": len(errors),
        "error_samples": errors[:5],
        "lost": len(lost),
    }
    rows = [
        [
            str(CLIENTS),
            f"{elapsed:.0f} s",
            str(len(created)),
            f"{rate:.1f}",
            f"{p50 * 1000:.0f} ms",
            f"{p99 * 1000:.0f} ms",
            str(len(errors)),
            str(len(lost)),
        ]
    ]
    checks = [
        Check("errors = 0", str(len(errors)), not errors),
        Check("lost tasks = 0 (every created task final)", str(len(lost)), not lost),
    ]
    columns = ["clients", "time", "tasks", "tasks/s", "p50", "p99", "errors", "lost"]
    return Result("load", columns, rows, checks, data)


def _not_final(base: str, task_ids: list[str]) -> list[str]:
    """Tasks still not final after DRAIN_SECONDS (each long-polled once more)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    lost = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for task_id in task_ids:
            remaining = max(0, int(deadline - time.monotonic()))
            answer = http.get(f"/api/v1/tasks/{task_id}", params={"wait": min(30, remaining)})
            if answer.status_code != 200 or answer.json()["status"] not in client.FINAL:
                lost.append(task_id)
    return lost
