"""End-to-end suite: HTTP only (httpx), against the local stack, containers or an environment.

    pytest tests/e2e                        local stack (started here, stopped if started here)
    pytest tests/e2e --target docker        containers of the built image (containers module)
    pytest tests/e2e --env stage            URLs of env/stage.env (Flower password and, for a
                                            restricted API, its login from the cluster Secrets,
                                            else FLOWER_PASSWORD / API_AUTH_PASSWORD); `.localhost`
                                            hosts via 127.0.0.1, Traefik's self-signed
                                            certificate accepted when that mode is in effect
    pytest tests/e2e --base-url URL [--flower-url URL]   anything reachable over HTTP

At the end a table lists each scenario, its result and its time.
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator

import httpx
import pytest
from rich.console import Console
from rich.table import Table

from .target import Target, environment_target, stack_target, url_target

_RESULTS: dict[str, list] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("e2e", "end-to-end target")
    group.addoption(
        "--target",
        choices=("local", "docker"),
        default="local",
        help="stack to bring up when no --env/--base-url is given: local processes or containers",
    )
    group.addoption("--env", default=None, help="deployed environment to test (stage, prod)")
    group.addoption("--base-url", default=None, help="API base URL of a running stack")
    group.addoption("--flower-url", default=None, help="Flower base URL (with --base-url)")


def _kind(config: pytest.Config) -> str:
    if config.getoption("--base-url"):
        return "url"
    if config.getoption("--env"):
        return "env"
    return config.getoption("--target")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The stack under test (see the module docstring)."""
    config = request.config
    kind = _kind(config)
    if kind == "url":
        yield url_target(config.getoption("--base-url"), config.getoption("--flower-url"))
    elif kind == "env":
        yield environment_target(config.getoption("--env"))
    else:
        with stack_target(docker=kind == "docker") as local:
            yield local


@pytest.fixture(scope="session")
def api(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=target.api_url, auth=target.api_auth, timeout=60, **target.client_options()
    ) as client:
        try:
            client.get("/health/live", timeout=10)
        except httpx.HTTPError as exc:
            tls = f" ({target.tls})" if target.tls else ""
            pytest.fail(f"{target.kind} target {target.api_url}{tls} is not reachable: {exc}")
        yield client


@pytest.fixture(scope="session")
def flower(target: Target) -> Iterator[httpx.Client]:
    if not target.flower_url or not target.flower_auth:
        pytest.skip(target.flower_skip_reason or "no Flower URL for this target")
    with httpx.Client(base_url=target.flower_url, timeout=30, **target.client_options()) as client:
        yield client


@pytest.fixture(scope="session")
def stack_kind(request: pytest.FixtureRequest) -> str:
    """local, docker, url or env (no stack is started by asking for it)."""
    return _kind(request.config)


# --- summary table --------------------------------------------------------------------------


def _scenario(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    return doc.strip().splitlines()[0].rstrip(".") if doc else item.name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    entry = _RESULTS.setdefault(item.nodeid, [_scenario(item), "passed", 0.0])
    entry[2] += report.duration
    if report.failed:
        entry[1] = "failed" if report.when == "call" else f"error ({report.when})"
    elif report.skipped and entry[1] == "passed":
        entry[1] = "skipped"
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if not _RESULTS:
        return
    table = Table(title="end-to-end scenarios", title_justify="left")
    for column in ("scenario", "result", "time"):
        table.add_column(column)
    colours = {"passed": "green", "skipped": "yellow"}
    for name, outcome, seconds in _RESULTS.values():
        colour = colours.get(outcome, "red")
        table.add_row(name, f"[{colour}]{outcome}[/]", f"{seconds:.1f}s")
    buffer = io.StringIO()
    Console(file=buffer, width=110, force_terminal=terminalreporter.isatty).print(table)
    terminalreporter.write(buffer.getvalue())
