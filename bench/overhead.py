"""Service overhead: upload + create `fd` task + long-polled result vs. the algorithm in-process.

Each run times the two side by side (interleaved), so ratios come from the same conditions.
"""

from __future__ import annotations

import time

import httpx

from bench import client
from bench.data import Dataset
from bench.report import Check, Result, median
from desbordante_ops.core.settings import EnvConfig

DATASETS = (
    Dataset("tiny", columns=4, rows=8, values=3, seed=1),
    Dataset("small", columns=6, rows=2_000, values=9, seed=1),
    Dataset("seconds", columns=12, rows=40_000, values=9, seed=1),  # HyFD: 1-3 s
    Dataset("rows120k", columns=8, rows=120_000, values=99, seed=2),
)
TINY_TARGET_MS = 150
RATIO_TARGET = 1.10


def direct(dataset: Dataset) -> float:
    """Seconds of HyFD in this process on the same file (load + execute + result).

    With the options the service runs it with (its schema's defaults, e.g. threads=1), not
    Desbordante's own defaults (threads=0: every core), so both sides do the same work.
    """
    from desbordante_service.profiling import runner
    from desbordante_service.profiling.schemas import resolve

    algorithm, config = resolve("fd", None, {})
    started = time.perf_counter()
    runner.run("fd", algorithm, config, dataset.path, ",", True, dataset.header())
    return time.perf_counter() - started


def through_service(http: httpx.Client, dataset: Dataset) -> float:
    """Seconds from the first upload byte to the final task answer."""
    started = time.perf_counter()
    uploaded = client.upload(http, dataset.path)
    task = client.wait_final(http, client.create_task(http, uploaded["id"]))
    elapsed = time.perf_counter() - started
    if task["status"] != "succeeded":
        raise client.BenchError(f"{dataset.name}: task {task['status']}: {task['error']}")
    client.delete_dataset(http, uploaded["id"])
    return elapsed


def run(cfg: EnvConfig, runs: int) -> Result:
    rows, checks, data = [], [], {}
    with httpx.Client(base_url=cfg.toolkit.API_BASE_URL, timeout=120) as http:
        for dataset in DATASETS:
            dataset.ensure()
            through_service(http, dataset)  # warm-up: imports, connections, caches
            direct(dataset)
            pairs = [(direct(dataset), through_service(http, dataset)) for _ in range(runs)]
            alone = median([d for d, _ in pairs])
            served = median([s for _, s in pairs])
            ratio = median([s / d for d, s in pairs])
            overhead = median([s - d for d, s in pairs])
            data[dataset.name] = {
                "rows": dataset.rows,
                "columns": dataset.columns,
                "bytes": dataset.path.stat().st_size,
                "runs": runs,
                "direct_s": alone,
                "service_s": served,
                "ratio": ratio,
                "overhead_s": overhead,
            }
            rows.append(
                [
                    dataset.name,
                    f"{dataset.rows} x {dataset.columns}",
                    f"{alone * 1000:.0f} ms",
                    f"{served * 1000:.0f} ms",
                    f"{overhead * 1000:+.0f} ms",
                    f"{ratio:.2f}",
                ]
            )
            if alone >= 1.0:
                checks.append(
                    Check(
                        f"{dataset.name}: overhead <= 10% (algorithm >= 1 s)",
                        f"{(ratio - 1) * 100:+.1f}% ({overhead * 1000:+.0f} ms)",
                        ratio <= RATIO_TARGET,
                    )
                )
    tiny = data["tiny"]["service_s"] * 1000
    checks.insert(0, Check(f"tiny: <= {TINY_TARGET_MS} ms", f"{tiny:.0f} ms", tiny <= 150))
    columns = ["dataset", "rows x cols", "in-process", "service", "overhead", "ratio"]
    return Result("overhead", columns, rows, checks, data)
