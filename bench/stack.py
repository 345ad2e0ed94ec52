"""The local stack the benchmarks run against, isolated from the default one.

Own run directory, ports, database and broker vhost (so an `invoke up` stack or the e2e suite
on the same machine is never disturbed) and an upload cap large enough for 1 GB files. The
settings reach the toolkit as process-environment overrides, like any user override.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
from invoke import Context

from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local.processes import ProcessStack

OVERRIDES = {
    "LOCAL_RUN_DIR": ".run/bench",
    "UPLOADED_FILES_DIR_PATH": ".run/bench/uploads",
    "APPLICATION_SERVER_PORT": "8100",
    "FLOWER_PORT": "5655",
    "POSTGRES_DB": "desbordante_bench",
    "RABBITMQ_VHOST": "desbordante_bench",
    "MAX_UPLOAD_SIZE_BYTES": str(2 * 1024**3),
    "LONG_POLL_MAX_SECONDS": "60",
    "LOG_LEVEL": "WARNING",
}


def bench_environ() -> dict[str, str]:
    return {**os.environ, **OVERRIDES}


def bench_config() -> EnvConfig:
    return load_config("local", environ=bench_environ())


@contextmanager
def running() -> Iterator[EnvConfig]:
    """The bench stack, up for the duration; stopped afterwards if it was started here."""
    cfg = bench_config()
    stack = ProcessStack(Context(), cfg)
    started = not stack.is_running()
    stack.up(timeout=120)
    try:
        yield cfg
    finally:
        if started:
            stack.down(timeout=30)


def api_process(cfg: EnvConfig) -> psutil.Process:
    """The API server process of the stack (for RSS sampling)."""
    info = ProcessStack(Context(), cfg).sup.processes()["api"]
    return psutil.Process(info["pid"])
