"""Contract suite: schemathesis against an isolated local stack (see stack.py), once per seed.

    pytest tests/contract                                   the bounded run CI makes (SEEDS)
    pytest tests/contract --st-seeds=7,8,9                   other seeds, one run each
    pytest tests/contract --st-args="--seed 7 -n 300"        extra `schemathesis run` options
                                                             (with --seed: that one run only)

At the end the schemathesis summary of each run (requests generated, failures, time) is printed.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack, running

# Each seed is a different, reproducible generation (with the same stack, hooks and example
# count); every one must find no failure. Two runs of ~3.5k requests each, ~1 min each here.
SEEDS = (1, 2)
SUMMARY: dict[str, list[str]] = {}
SEEDS_KEY = pytest.StashKey[list[int | None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("contract")
    group.addoption(
        "--st-args",
        default="",
        help="extra options for `schemathesis run` (after the suite's own, so they win)",
    )
    group.addoption(
        "--st-seeds",
        default=",".join(str(seed) for seed in SEEDS),
        help="comma-separated seeds, one schemathesis run each (default: %(default)s)",
    )


def _seeds(config: pytest.Config) -> list[int | None]:
    """The seeds to run with; None (one run) when --st-args chooses the seed itself."""
    if any(arg.startswith("--seed") for arg in shlex.split(config.getoption("--st-args"))):
        return [None]
    raw = config.getoption("--st-seeds")
    try:
        seeds = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(f"--st-seeds: comma-separated integers, not {raw!r}") from None
    if not seeds:
        raise pytest.UsageError("--st-seeds: at least one seed")
    return list(dict.fromkeys(seeds))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SEEDS_KEY] = _seeds(config)  # a bad --st-seeds is a usage error, up front


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        seeds = metafunc.config.stash[SEEDS_KEY]
        ids = [f"seed={seed}" if seed is not None else "seed=from-st-args" for seed in seeds]
        metafunc.parametrize("seed", seeds, ids=ids)


@pytest.fixture(scope="session")
def st_args(request: pytest.FixtureRequest) -> list[str]:
    return shlex.split(request.config.getoption("--st-args"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(Path(tmp_path_factory.mktemp("contract"))) as local:
        yield local


def pytest_terminal_summary(terminalreporter) -> None:
    for name, lines in SUMMARY.items():
        terminalreporter.section(f"schemathesis ({name})")
        for line in lines:
            terminalreporter.write_line(line)
