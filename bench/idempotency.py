"""Idempotency: time of `invoke up` when everything already runs, and `bootstrap --dry-run`.

Both run as real `invoke` commands in a subprocess (the bench stack's settings in their
environment), so the figures include interpreter start and task loading like a user sees.
"""

from __future__ import annotations

import subprocess
import sys
import time

from invoke import Exit

from bench.report import Check, Result, median
from bench.stack import api_process, bench_environ
from desbordante_ops.core.settings import REPO_ROOT, EnvConfig

COMMANDS = {
    "invoke up (already running)": ["up"],
    "invoke bootstrap --dry-run": ["bootstrap", "--dry-run"],
}
TIMEOUT = 300


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        env=bench_environ(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Exit(f"invoke {' '.join(args)} failed: {tail[0]}")
    return elapsed


def run(cfg: EnvConfig, runs: int) -> Result:
    rows, data = [], {}
    before = api_process(cfg).pid
    for label, args in COMMANDS.items():
        times = [timed(args) for _ in range(max(3, runs))]
        data[label] = {"runs": len(times), "median_s": median(times), "all_s": times}
        rows.append([label, f"{median(times):.2f} s", f"{min(times):.2f}-{max(times):.2f} s"])
    up = data["invoke up (already running)"]["median_s"]
    same = api_process(cfg).pid == before
    checks = [
        Check("`invoke up` on a running stack restarts nothing", f"API pid kept: {same}", same),
        Check("`invoke up` on a running stack: time (no target)", f"{up:.2f} s", None),
    ]
    return Result("idempotency", ["command", "median", "range"], rows, checks, data)
