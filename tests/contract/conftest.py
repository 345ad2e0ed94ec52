"""Contract suite: schemathesis against an isolated local stack (see stack.py).

    pytest tests/contract                                   the bounded run CI makes
    pytest tests/contract --st-args="--seed 7 -n 300"        extra `schemathesis run` options

At the end the schemathesis summary (requests generated, failures, time) is printed.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack, running

SUMMARY: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("contract").addoption(
        "--st-args",
        default="",
        help="extra options for `schemathesis run` (after the suite's own, so they win)",
    )


@pytest.fixture(scope="session")
def st_args(request: pytest.FixtureRequest) -> list[str]:
    return shlex.split(request.config.getoption("--st-args"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(Path(tmp_path_factory.mktemp("contract"))) as local:
        yield local


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("schemathesis")
        for line in SUMMARY:
            terminalreporter.write_line(line)
