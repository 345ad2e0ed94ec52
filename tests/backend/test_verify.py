"""`desbordante-service verify` as a process against real API processes (real PostgreSQL,
RabbitMQ and worker): it passes with one line per step, fails at the step that breaks, always
removes its dataset when it can, and refuses bad configuration with exit code 2.

The role runs with none of the service's settings in its environment: it only talks HTTP.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from servicekit import backend_env, migrated_database
from serviceprocs import Api, Worker

from desbordante_service import verify
from desbordante_service.profiling import runner
from desbordante_service.settings import SECRET_FIELDS, Settings

pytestmark = pytest.mark.timeout(300)

RUN_TIMEOUT = 120  # seconds one verify process may take before the test fails
ID = r"[0-9a-f-]{36}"
PASSED = [
    r"verify: ready ok",
    rf"verify: upload ok \(dataset ({ID})\)",
    r"verify: task ok \(5 FDs, as expected\)",
    r"verify: delete ok",
]
SERVICE_VARIABLES = {*Settings.model_fields, *(f"{name}_FILE" for name in SECRET_FIELDS)}


@dataclass(frozen=True)
class Run:
    code: int
    lines: list[str]
    stderr: str


def run_role(**variables: str) -> Run:
    """The real role in a process whose environment holds no service setting, only VARIABLES."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in SERVICE_VARIABLES and not name.startswith("VERIFY_")
    }
    result = subprocess.run(
        [sys.executable, "-m", "desbordante_service", "verify"],
        env={**environ, **variables},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Run(result.returncode, result.stdout.splitlines(), result.stderr)


def matches(lines: list[str], patterns: list[str]) -> list[re.Match[str]]:
    """Each line matched by its pattern (exactly as many lines as patterns)."""
    assert len(lines) == len(patterns), lines
    found = []
    for line, pattern in zip(lines, patterns, strict=True):
        match = re.fullmatch(pattern, line)
        assert match, (line, pattern)
        found.append(match)
    return found


# --- the pinned FDs are what the real algorithms find -----------------------------------------


@pytest.mark.parametrize("algorithm", ["HyFD", "DFD", "FDep", "FUN", "Pyro", "Depminer", "FastFDs"])
def test_expected_fds_are_what_desbordante_finds(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "verify.csv"
    path.write_bytes(verify.VERIFY_CSV)

    result = runner.run("fd", algorithm, {}, path, ",", True, verify.VERIFY_COLUMNS)

    assert verify.fds_of(result) == verify.EXPECTED_FDS
    assert verify.VERIFY_CSV.count(b"\n") == verify.VERIFY_ROWS + 1


def test_a_difference_names_the_missing_and_the_unexpected_fds() -> None:
    found = set(verify.EXPECTED_FDS) - {(("department",), "building")}
    found.add((("building",), "department"))

    assert verify.describe_difference(found, verify.EXPECTED_FDS) == (
        "5 FDs, expected 5, missing: department -> building, unexpected: building -> department"
    )


# --- a working stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API and a worker of this module's own database and queue."""
    logs = tmp_path_factory.mktemp("verify-stack")
    worker = Worker(own_env, logs / "worker.log")
    api = Api(own_env, logs / "api.log")
    yield api
    api.stop()
    worker.stop()


def test_verify_passes_with_one_line_per_step_and_removes_its_dataset(stack: Api) -> None:
    run = run_role(VERIFY_API_URL=stack.url, VERIFY_TIMEOUT_SECONDS="90")

    assert run.code == 0, (run.lines, run.stderr)
    upload = matches(run.lines, PASSED)[1]
    assert run.stderr == ""
    dataset = upload[1]
    assert stack.client.get(f"/api/v1/datasets/{dataset}").status_code == 404
    tasks = stack.client.get("/api/v1/tasks", params={"dataset_id": dataset}).json()
    assert tasks == []  # deleted with its dataset


def test_a_url_that_answers_404_fails_at_readiness_and_creates_nothing(stack: Api) -> None:
    before = stack.client.get("/api/v1/datasets", params={"limit": 500}).json()

    run = run_role(VERIFY_API_URL=f"{stack.url}/nothing")

    assert run.code == 1
    assert run.lines == ["verify: ready FAILED: GET /nothing/health/ready answered 404: Not Found"]
    assert stack.client.get("/api/v1/datasets", params={"limit": 500}).json() == before


# --- basic auth: the password comes from a file and reaches the wire only -----------------------


class AuthProxy:
    """A loopback proxy to the real API that demands basic auth (as the cluster's edge does)."""

    def __init__(self, upstream: str, user: str, password: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        client = httpx.Client(base_url=upstream, timeout=60)
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                seen.append(self.headers.get("authorization", ""))
                if self.headers.get("authorization") != expected:
                    self._send(401, b'{"detail": "authentication required"}', {})
                    return
                length = int(self.headers.get("content-length") or 0)
                headers = {"content-type": self.headers.get("content-type", "")}
                answer = client.request(
                    self.command,
                    self.path,
                    content=self.rfile.read(length),
                    headers={k: v for k, v in headers.items() if v},
                )
                self._send(answer.status_code, answer.content, answer.headers)

            def _send(self, status: int, body: bytes, headers) -> None:
                self.send_response(status)
                self.send_header("content-type", headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._client = client
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
        self._thread.join(timeout=10)


@pytest.fixture
def auth_proxy(stack: Api) -> Iterator[tuple[AuthProxy, str]]:
    password = secrets.token_urlsafe(16)
    proxy = AuthProxy(stack.url, "verifier", password)
    yield proxy, password
    proxy.close()


def test_basic_auth_password_is_read_from_its_file(auth_proxy, tmp_path: Path) -> None:
    proxy, password = auth_proxy
    secret = tmp_path / "password"
    secret.write_text(password + "\n")

    run = run_role(
        VERIFY_API_URL=proxy.url,
        VERIFY_AUTH_USER="verifier",
        VERIFY_AUTH_PASSWORD_FILE=str(secret),
    )

    assert run.code == 0, (run.lines, run.stderr)
    matches(run.lines, PASSED)
    assert password not in "\n".join(run.lines) + run.stderr
    assert proxy.seen and all(header.startswith("Basic ") for header in proxy.seen)


def test_a_wrong_password_fails_at_readiness_naming_the_settings(auth_proxy, tmp_path) -> None:
    proxy, password = auth_proxy
    secret = tmp_path / "password"
    secret.write_text("not-" + password)

    run = run_role(
        VERIFY_API_URL=proxy.url,
        VERIFY_AUTH_USER="verifier",
        VERIFY_AUTH_PASSWORD_FILE=str(secret),
    )

    assert run.code == 1
    assert run.lines == [
        "verify: ready FAILED: GET /health/ready answered 401: authentication required "
        "(check VERIFY_AUTH_USER and VERIFY_AUTH_PASSWORD_FILE)"
    ]
    assert password not in run.stderr + "\n".join(run.lines)


# --- a stack whose queue no worker consumes -----------------------------------------------------


@dataclass(frozen=True)
class Stalled:
    limited: Api  # MAX_PENDING_TASKS=1
    unlimited: Api  # MAX_PENDING_TASKS=0, same database and queue


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stalled]:
    """Two API processes of a database of their own and a queue that no worker consumes."""
    suffix = secrets.token_hex(4)
    env = backend_env(
        f"dsvc_verify_{suffix}",
        tmp_path_factory.mktemp("uploads"),
        f"verify-idle-{suffix}",
        TASK_TIME_LIMIT_SECONDS="120",
    )
    logs = tmp_path_factory.mktemp("verify-stalled")
    with migrated_database(env):
        limited = Api({**env, "MAX_PENDING_TASKS": "1"}, logs / "limited.log")
        unlimited = Api({**env, "MAX_PENDING_TASKS": "0"}, logs / "unlimited.log")
        yield Stalled(limited, unlimited)
        limited.stop()
        unlimited.stop()


def _queued_task(api: Api) -> str:
    """A dataset with a task that stays queued (nothing consumes the queue); the dataset id."""
    uploaded = api.client.post("/api/v1/datasets", files={"file": ("b.csv", b"a,b\n1,2\n")})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["id"]
    created = api.client.post("/api/v1/tasks", json={"dataset_id": dataset, "primitive": "fd"})
    assert created.status_code == 202, created.text
    return dataset


def test_a_full_queue_fails_at_the_task_and_the_dataset_is_still_deleted(stalled) -> None:
    blocker = _queued_task(stalled.unlimited)  # the backlog is now at least 1

    run = run_role(VERIFY_API_URL=stalled.limited.url)

    assert run.code == 1
    upload = matches(
        run.lines,
        [
            PASSED[0],
            PASSED[1],
            PASSED[3],  # the clean-up first: the last line is always the first failure
            r"verify: task FAILED: POST /api/v1/tasks answered 503: the task queue is full "
            r"\(\d+ tasks queued or running, MAX_PENDING_TASKS=1\); retry in 30 seconds",
        ],
    )[1]
    client = stalled.limited.client
    assert client.get(f"/api/v1/datasets/{upload[1]}").status_code == 404
    assert client.get(f"/api/v1/datasets/{blocker}").status_code == 200


def test_without_a_worker_the_poll_ends_at_the_timeout_and_says_so(stalled) -> None:
    run = run_role(VERIFY_API_URL=stalled.unlimited.url, VERIFY_TIMEOUT_SECONDS="3")

    assert run.code == 1
    found = matches(
        run.lines,
        [
            PASSED[0],
            PASSED[1],
            rf"verify: delete FAILED: DELETE /api/v1/datasets/({ID}) answered 409: dataset "
            rf"({ID}) has queued or running tasks; retry when they finish \(gave up after "
            rf"{verify.DELETE_ATTEMPTS} attempts\)",
            rf"verify: task FAILED: task {ID} still queued after 3 s \(VERIFY_TIMEOUT_SECONDS\): "
            r"is a worker consuming the task queue\?",
        ],
    )
    dataset = found[1][1]
    assert found[2][1] == found[2][2] == dataset
    # Still there: a queued task holds it, which is what the line says.
    assert stalled.unlimited.client.get(f"/api/v1/datasets/{dataset}").status_code == 200


# --- configuration --------------------------------------------------------------------------


def test_missing_api_url_exits_2_with_one_line() -> None:
    run = run_role()

    assert run.code == 2
    assert run.lines == []
    assert run.stderr.splitlines() == [
        "configuration error: VERIFY_API_URL: required environment variable is not set"
    ]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"VERIFY_API_URL": "ftp://api"}, "VERIFY_API_URL: must be an http:// or https:// URL"),
        ({"VERIFY_API_URL": "api:80"}, "VERIFY_API_URL: must be an http:// or https:// URL"),
        (
            {"VERIFY_API_URL": "http://u:hunter2@api"},
            "VERIFY_API_URL: must not hold credentials; set VERIFY_AUTH_USER and "
            "VERIFY_AUTH_PASSWORD_FILE instead",
        ),
        (
            {"VERIFY_API_URL": "http://api", "VERIFY_TIMEOUT_SECONDS": "0"},
            "VERIFY_TIMEOUT_SECONDS: must be a number of seconds above 0",
        ),
        (
            {"VERIFY_API_URL": "http://api", "VERIFY_TIMEOUT_SECONDS": "soon"},
            "VERIFY_TIMEOUT_SECONDS: must be a number of seconds above 0",
        ),
        (
            {"VERIFY_API_URL": "http://api", "VERIFY_AUTH_USER": "u"},
            "VERIFY_AUTH_PASSWORD_FILE: required when VERIFY_AUTH_USER is set",
        ),
        (
            {"VERIFY_API_URL": "http://api", "VERIFY_AUTH_PASSWORD": "hunter2"},
            "VERIFY_AUTH_PASSWORD: not read",
        ),
        (
            {
                "VERIFY_API_URL": "http://api",
                "VERIFY_AUTH_USER": "u",
                "VERIFY_AUTH_PASSWORD_FILE": "/nonexistent/password",
            },
            "VERIFY_AUTH_PASSWORD_FILE: cannot read /nonexistent/password: No such file",
        ),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(variables, message) -> None:
    run = run_role(**variables)

    assert run.code == 2
    assert run.lines == []
    [line] = run.stderr.splitlines()
    assert line.startswith(f"configuration error: {message}"), line
    assert "hunter2" not in line
