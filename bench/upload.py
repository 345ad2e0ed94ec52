"""Upload: throughput and the API process's RSS growth for 100 MB and 1 GB files.

The baseline is a raw loopback copy of the same file (TCP socket to a thread writing it to the
same filesystem), measured in the same run.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench import client
from bench.data import sized_file
from bench.report import Check, Result, median
from bench.stack import api_process
from desbordante_ops.core.settings import EnvConfig

SIZES = {"100MB": 100 * 10**6, "1GB": 10**9}
RSS_TARGET_MB = 50
THROUGHPUT_FACTOR = 3
# Issue 12: at least 3x the throughput measured before the one-pass upload (2026-11-25).
BEFORE_ONE_PASS_MB_S = {"100MB": 85, "1GB": 90}
GAIN_TARGET = 3
SAMPLE_SECONDS = 0.02


class RssSampler(threading.Thread):
    """Peak RSS of a process (and its children) while running."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.baseline = self._rss()
        self.peak = self.baseline
        self._done = threading.Event()

    def _rss(self) -> int:
        procs = [self.process, *self.process.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        """Stop sampling; the growth over the baseline in bytes."""
        self._done.set()
        self.join(timeout=5)
        return self.peak - self.baseline


def loopback_copy(path: Path, target_dir: Path) -> float:
    """Seconds to send PATH through a loopback TCP socket into a file in TARGET_DIR."""
    target = target_dir / f".bench-copy-{path.name}"
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def _receive() -> None:
        connection, _ = server.accept()
        with connection, target.open("wb") as out:
            while data := connection.recv(1024 * 1024):
                out.write(data)

    receiver = threading.Thread(target=_receive, daemon=True)
    receiver.start()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, path.open("rb") as handle:
        sock.sendfile(handle)
    receiver.join(timeout=600)
    elapsed = time.perf_counter() - started
    server.close()
    target.unlink(missing_ok=True)
    return elapsed


def timed_upload(http: httpx.Client, path: Path, api: psutil.Process) -> tuple[float, int]:
    """(seconds, RSS growth in bytes) of one upload, the dataset deleted afterwards."""
    sampler = RssSampler(api)
    sampler.start()
    started = time.perf_counter()
    try:
        dataset = client.upload(http, path)
    finally:
        growth = sampler.stop()
    elapsed = time.perf_counter() - started
    client.delete_dataset(http, dataset["id"])
    return elapsed, growth


def csv_check_seconds(path: Path) -> float:
    """Seconds of the backend's CSV check alone over the stored file, in this process (the
    upload runs it while receiving; this is what reading the file again would cost)."""
    from desbordante_service.datasets.csvcheck import inspect_csv

    started = time.perf_counter()
    inspect_csv(path, ",", True)
    return time.perf_counter() - started


def run(cfg: EnvConfig, runs: int) -> Result:
    uploads_dir = cfg.uploads_dir
    api = api_process(cfg)
    rows, checks, data = [], [], {}
    runs = max(3, min(runs, 5))
    with httpx.Client(base_url=cfg.toolkit.API_BASE_URL, timeout=900) as http:
        for label, size in SIZES.items():
            path = sized_file(f"upload-{label}", size)
            pairs = [(loopback_copy(path, uploads_dir), timed_upload(http, path, api))]
            pairs += [
                (loopback_copy(path, uploads_dir), timed_upload(http, path, api))
                for _ in range(runs - 1 if label == "100MB" else 2)
            ]
            check_s = csv_check_seconds(path)
            mb = path.stat().st_size / 1e6
            raw = median([r for r, _ in pairs])
            served = median([u for _, (u, _) in pairs])
            growth = max(g for _, (_, g) in pairs) / 2**20
            factor = median([u / r for r, (u, _) in pairs])
            data[label] = {
                "bytes": path.stat().st_size,
                "runs": len(pairs),
                "loopback_s": raw,
                "upload_s": served,
                "loopback_mb_s": mb / raw,
                "upload_mb_s": mb / served,
                "slowdown": factor,
                "rss_growth_mib_max": growth,
                "csv_check_in_process_s": check_s,
            }
            rows.append(
                [
                    label,
                    f"{mb / raw:.0f} MB/s",
                    f"{mb / served:.0f} MB/s",
                    f"{factor:.1f}x",
                    f"{growth:.1f} MiB",
                    f"{check_s:.2f} s",
                ]
            )
            checks.append(
                Check(
                    f"{label}: RSS growth < {RSS_TARGET_MB} MB",
                    f"{growth:.1f} MiB (max)",
                    growth < RSS_TARGET_MB,
                )
            )
            before = BEFORE_ONE_PASS_MB_S[label]
            checks.append(
                Check(
                    f"{label}: >= {GAIN_TARGET}x the {before} MB/s before the one-pass upload",
                    f"{mb / served:.0f} MB/s ({mb / served / before:.1f}x)",
                    mb / served >= GAIN_TARGET * before,
                )
            )
            checks.append(
                Check(
                    f"{label}: within {THROUGHPUT_FACTOR}x of a loopback copy",
                    f"{factor:.1f}x slower",
                    factor <= THROUGHPUT_FACTOR,
                )
            )
    columns = [
        "file",
        "loopback copy",
        "upload",
        "slowdown",
        "API RSS growth (max)",
        "CSV check alone (in-process)",
    ]
    return Result("upload", columns, rows, checks, data)
