"""`desbordante-service verify`: prove over HTTP that a running release really profiles a dataset.

The role (a Kubernetes Job after a deploy, or by hand) talks only HTTP to the API; it needs no
database, broker or storage settings. Its configuration, environment variables only:

    VERIFY_API_URL              base URL of the API, e.g. http://api (required; no credentials)
    VERIFY_TIMEOUT_SECONDS      bound of the checks: readiness, upload, task (default 120)
    VERIFY_AUTH_USER            basic-auth user (optional; with VERIFY_AUTH_PASSWORD_FILE)
    VERIFY_AUTH_PASSWORD_FILE   file holding that user's password (never a variable or argv)

Steps, each printing one line to `out` (stdout for the role), stopping at the first failure:

    verify: ready ok                              GET /health/ready answers 200
    verify: upload ok (dataset <id>)              POST /api/v1/datasets with VERIFY_CSV
    verify: task ok (5 FDs, as expected)          POST /api/v1/tasks (fd, HyFD), long-polled
                                                  to the end; its FDs are exactly EXPECTED_FDS
    verify: delete ok                             DELETE /api/v1/datasets/<id>

A failed step prints `verify: <step> FAILED: <why>` instead, and no later check runs. The
dataset, once uploaded, is deleted whatever happens later (best effort, still one line; a 409
"in use" is retried DELETE_ATTEMPTS times), after the checks' time bound if need be. The line of
the first failure is always the last line (after the deletion's), so whoever reads only the last
line of the output (e.g. the deploy's report of the Job) reads why it failed. The role exits 0
when every step passed, 1 otherwise, 2 on bad configuration (one line naming the variable).

For other code (e.g. the toolkit's bootstrap smoke test), the same checks over any client:

    with httpx.Client(base_url=url, timeout=30) as client:
        passed = run_verify(client, timeout=120, out=print)   # True when every step passed

The client's `base_url` is the API's base URL; its auth, TLS and transport are the caller's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from desbordante_service.settings import SettingsError

DEFAULT_TIMEOUT_SECONDS = 120.0
MAX_TIMEOUT_SECONDS = 86_400.0
REQUEST_SECONDS = 30.0  # the most one request (other than a long poll) may take
LONG_POLL_SECONDS = 30  # the `wait` asked for; the server caps it at LONG_POLL_MAX_SECONDS
POLL_MARGIN_SECONDS = 2.0  # a long poll asks for this much less than the time left
MIN_POLL_INTERVAL_SECONDS = 0.5  # between polls a server without long polling answers at once
MAX_POLLS = 1000
READY_RETRY_SECONDS = 2.0  # readiness is retried while the API answers 503 or cannot be reached
MAX_READY_ATTEMPTS = 100
DELETE_ATTEMPTS = 5  # DELETE while a task on the dataset is queued or running answers 409
DELETE_RETRY_SECONDS = 1.0
DELETE_REQUEST_SECONDS = 10.0
MAX_REASON_CHARS = 300

# The dataset: `employee` is a key; a department sits in one building; department and salary
# together name one employee. Nothing else holds (a building has several departments, a salary
# several employees).
VERIFY_CSV = (
    b"employee,department,building,salary\n"
    b"ann,sales,north,50\n"
    b"bob,sales,north,60\n"
    b"cid,it,south,60\n"
    b"dan,it,south,70\n"
    b"eve,hr,north,50\n"
)
VERIFY_COLUMNS = ["employee", "department", "building", "salary"]
VERIFY_ROWS = 5
ALGORITHM = "HyFD"  # exact; every exact FD algorithm of desbordante 2.5.0 finds the same five
# The minimal, non-trivial FDs of VERIFY_CSV (lhs, rhs), computed with desbordante's HyFD.
EXPECTED_FDS = frozenset(
    {
        (("department",), "building"),
        (("employee",), "building"),
        (("employee",), "department"),
        (("employee",), "salary"),
        (("department", "salary"), "employee"),
    }
)

Out = Callable[[str], object]
FD = tuple[tuple[str, ...], str]


class StepFailed(Exception):
    """A check failed; the message is the one-line reason."""


@dataclass(frozen=True)
class Deadline:
    """The time bound of the checks: `seconds` long, over at `at` (time.monotonic())."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def __str__(self) -> str:
        return f"{self.seconds:g} s (VERIFY_TIMEOUT_SECONDS)"


@dataclass(frozen=True)
class VerifyConfig:
    api_url: str
    timeout: float
    auth: tuple[str, str] | None = field(default=None, repr=False)  # (user, password)

    def client(self) -> httpx.Client:
        """An HTTP client of the API (basic auth when configured); the caller closes it."""
        auth = httpx.BasicAuth(*self.auth) if self.auth else None
        return httpx.Client(base_url=self.api_url, auth=auth, timeout=REQUEST_SECONDS)


# --- configuration ------------------------------------------------------------------------


def load_config(environ: Mapping[str, str]) -> VerifyConfig:
    """The role's configuration; `SettingsError` with one line naming the variable."""
    return VerifyConfig(
        api_url=_api_url(environ.get("VERIFY_API_URL", "").strip()),
        timeout=_timeout(environ.get("VERIFY_TIMEOUT_SECONDS", "").strip()),
        auth=_auth(environ),
    )


def _api_url(value: str) -> str:
    name = "VERIFY_API_URL"
    if not value:
        raise SettingsError(f"{name}: required environment variable is not set")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        raise SettingsError(f"{name}: not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise SettingsError(f"{name}: must be an http:// or https:// URL with a host")
    if url.userinfo:  # never echo the value: it holds credentials
        raise SettingsError(
            f"{name}: must not hold credentials; set VERIFY_AUTH_USER and "
            "VERIFY_AUTH_PASSWORD_FILE instead"
        )
    if url.query or url.fragment:
        raise SettingsError(f"{name}: must be a base URL, without a query or fragment")
    return str(url)


def _timeout(value: str) -> float:
    if not value:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise SettingsError(
            f"VERIFY_TIMEOUT_SECONDS: must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_SECONDS:.0f}, not {value!r}"
        )
    return seconds


def _auth(environ: Mapping[str, str]) -> tuple[str, str] | None:
    if "VERIFY_AUTH_PASSWORD" in environ:
        raise SettingsError(
            "VERIFY_AUTH_PASSWORD: not read (a password must not sit in the environment); put "
            "it in a file and set VERIFY_AUTH_PASSWORD_FILE"
        )
    user = environ.get("VERIFY_AUTH_USER", "")
    path = environ.get("VERIFY_AUTH_PASSWORD_FILE", "")
    if not user and not path:
        return None
    if not user:
        raise SettingsError("VERIFY_AUTH_USER: required when VERIFY_AUTH_PASSWORD_FILE is set")
    if not path:
        raise SettingsError("VERIFY_AUTH_PASSWORD_FILE: required when VERIFY_AUTH_USER is set")
    try:
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(
            f"VERIFY_AUTH_PASSWORD_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(f"VERIFY_AUTH_PASSWORD_FILE: {path} is not UTF-8 text") from None
    if not password:
        raise SettingsError(f"VERIFY_AUTH_PASSWORD_FILE: {path} is empty")
    return user, password


# --- the checks ---------------------------------------------------------------------------


def run_verify(client: httpx.Client, timeout: float, out: Out = print) -> bool:
    """Every step against the API behind CLIENT, one line each to OUT; True when all passed.

    TIMEOUT bounds readiness, upload and task together; the dataset's deletion comes after,
    whatever happened, with its own small bound (DELETE_ATTEMPTS). The first failure's line is
    the last one written.
    """
    deadline = Deadline.after(timeout)
    step = "ready"
    dataset_id: str | None = None
    failed: str | None = None  # the line of the first failure, printed last
    try:
        check_ready(client, deadline)
        out("verify: ready ok")
        step = "upload"
        dataset_id, dataset = upload(client, deadline)
        check_dataset(dataset)
        out(f"verify: upload ok (dataset {dataset_id})")
        step = "task"
        found = run_fd_task(client, dataset_id, deadline)
        out(f"verify: task ok ({len(found)} FDs, as expected)")
    except StepFailed as failure:
        failed = f"verify: {step} FAILED: {failure}"
    finally:
        if dataset_id is not None:
            try:
                delete_dataset(client, dataset_id)
                out("verify: delete ok")
            except StepFailed as failure:
                line = f"verify: delete FAILED: {failure}"
                if failed is None:
                    failed = line
                else:
                    out(line)
    if failed is not None:
        out(failed)
    return failed is None


def check_ready(client: httpx.Client, deadline: Deadline) -> None:
    """GET /health/ready answers 200, retried while it answers 503 or cannot be reached."""
    reason = "GET /health/ready: not sent"
    for _ in range(MAX_READY_ATTEMPTS):
        remaining = deadline.remaining()
        if remaining <= 0:
            break
        try:
            response = client.get("/health/ready", timeout=min(REQUEST_SECONDS, remaining))
        except httpx.HTTPError as exc:
            reason = _transport(exc, "GET /health/ready")
        else:
            if response.status_code == 200:
                return
            reason = _answer(response)
            if response.status_code != 503:
                raise StepFailed(reason)
        time.sleep(max(0.0, min(READY_RETRY_SECONDS, deadline.remaining())))
    raise StepFailed(f"{reason}; still not ready after {deadline}")


def upload(client: httpx.Client, deadline: Deadline) -> tuple[str, dict[str, Any]]:
    """POST VERIFY_CSV as a dataset; its id and the server's description of it."""
    what = "POST /api/v1/datasets"
    response = _request(
        client,
        "POST",
        "/api/v1/datasets",
        deadline,
        what,
        data={"separator": ",", "has_header": "true"},  # httpx sends these before the file
        files={"file": ("verify.csv", VERIFY_CSV, "text/csv")},
    )
    if response.status_code != 201:
        raise StepFailed(_answer(response))
    dataset = _json_object(what, response)
    dataset_id = dataset.get("id")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise StepFailed(f"{what} answered 201 without a dataset id")
    return dataset_id, dataset


def check_dataset(dataset: Mapping[str, Any]) -> None:
    """The server read VERIFY_CSV's columns and rows."""
    columns, rows = dataset.get("columns"), dataset.get("row_count")
    if columns != VERIFY_COLUMNS or rows != VERIFY_ROWS:
        raise StepFailed(
            f"the dataset has columns {columns} and {rows} rows, expected {VERIFY_COLUMNS} and "
            f"{VERIFY_ROWS}"
        )


def run_fd_task(client: httpx.Client, dataset_id: str, deadline: Deadline) -> set[FD]:
    """Create the FD task, long-poll it to the end; its FDs, when exactly EXPECTED_FDS."""
    what = "POST /api/v1/tasks"
    body = {"dataset_id": dataset_id, "primitive": "fd", "algorithm": ALGORITHM}
    response = _request(client, "POST", "/api/v1/tasks", deadline, what, json=body)
    if response.status_code != 202:
        raise StepFailed(_answer(response))
    task_id = _json_object(what, response).get("id")
    if not isinstance(task_id, str) or not task_id:
        raise StepFailed(f"{what} answered 202 without a task id")
    task = wait_final(client, task_id, deadline)
    if task.get("status") != "succeeded":
        raise StepFailed(f"task {task_id} failed: {_one_line(str(task.get('error')))}")
    found = fds_of(task.get("result"))
    if found is None:
        raise StepFailed(f"task {task_id} succeeded without an FD result")
    if found != EXPECTED_FDS:
        raise StepFailed(describe_difference(found, EXPECTED_FDS))
    return found


def wait_final(client: httpx.Client, task_id: str, deadline: Deadline) -> dict[str, Any]:
    """Long-poll GET /api/v1/tasks/{id} until the task is final, within the deadline."""
    what = f"GET /api/v1/tasks/{task_id}"
    status = "not read"
    for _ in range(MAX_POLLS):
        remaining = deadline.remaining()
        if remaining <= 0:
            break
        wait = int(max(0.0, min(LONG_POLL_SECONDS, remaining - POLL_MARGIN_SECONDS)))
        asked = time.monotonic()
        try:
            response = client.get(
                f"/api/v1/tasks/{task_id}", params={"wait": wait}, timeout=remaining
            )
        except httpx.TimeoutException:
            break
        except httpx.HTTPError as exc:
            raise StepFailed(_transport(exc, what)) from None
        if response.status_code != 200:
            raise StepFailed(_answer(response))
        task = _json_object(what, response)
        status = str(task.get("status"))
        if status in ("succeeded", "failed"):
            return task
        pause = MIN_POLL_INTERVAL_SECONDS - (time.monotonic() - asked)
        if pause > 0:  # the server did not wait (no long polling): do not hammer it
            time.sleep(min(pause, max(0.0, deadline.remaining())))
    raise StepFailed(
        f"task {task_id} still {status} after {deadline}: is a worker consuming the task queue?"
    )


def fds_of(result: object) -> set[FD] | None:
    """The FDs of a task result `{"fds": [{"lhs": [...], "rhs": "..."}]}`; None if malformed."""
    if not isinstance(result, dict) or not isinstance(result.get("fds"), list):
        return None
    found: set[FD] = set()
    for fd in result["fds"]:
        if not isinstance(fd, dict):
            return None
        lhs, rhs = fd.get("lhs"), fd.get("rhs")
        if not isinstance(lhs, list) or not all(isinstance(name, str) for name in lhs):
            return None
        if not isinstance(rhs, str):
            return None
        found.add((tuple(sorted(lhs)), rhs))
    return found


def describe_difference(found: set[FD], expected: frozenset[FD]) -> str:
    """One line: how many FDs were found, which expected ones are missing, which are extra."""

    def names(fds: set[FD]) -> str:
        return "; ".join(f"{','.join(lhs) or '{}'} -> {rhs}" for lhs, rhs in sorted(fds))

    parts = [f"{len(found)} FDs, expected {len(expected)}"]
    if missing := set(expected) - found:
        parts.append(f"missing: {names(missing)}")
    if extra := found - expected:
        parts.append(f"unexpected: {names(extra)}")
    return _one_line(", ".join(parts))


def delete_dataset(client: httpx.Client, dataset_id: str) -> None:
    """DELETE the dataset (a 404 means it is gone too); 409 "in use" and failures retried."""
    what = f"DELETE /api/v1/datasets/{dataset_id}"
    reason = f"{what}: not sent"
    attempts = 0
    while attempts < DELETE_ATTEMPTS:
        if attempts:
            time.sleep(DELETE_RETRY_SECONDS)
        attempts += 1
        try:
            response = client.delete(
                f"/api/v1/datasets/{dataset_id}", timeout=DELETE_REQUEST_SECONDS
            )
        except httpx.HTTPError as exc:
            reason = _transport(exc, what)
            continue
        if response.status_code in (204, 404):
            return
        reason = _answer(response)
        if response.status_code not in (409, 503):
            break
    raise StepFailed(f"{reason} (gave up after {attempts} attempts)")


# --- helpers ------------------------------------------------------------------------------


def _request(
    client: httpx.Client, method: str, path: str, deadline: Deadline, what: str, **kwargs: Any
) -> httpx.Response:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise StepFailed(f"{what}: not sent, the {deadline} are over")
    try:
        return client.request(method, path, timeout=min(REQUEST_SECONDS, remaining), **kwargs)
    except httpx.HTTPError as exc:
        raise StepFailed(_transport(exc, what)) from None


def _json_object(what: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise StepFailed(f"{what} answered {response.status_code} without a JSON object")
    return body


def _answer(response: httpx.Response) -> str:
    """`<method> <path> answered <status>: <detail>` (the API's error shape, else the body)."""
    what = f"{response.request.method} {response.request.url.path}"
    detail: object = None
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = body.get("detail")
    except ValueError:
        pass
    text = detail if isinstance(detail, str) else response.text
    hint = ""
    if response.status_code in (401, 403):
        hint = " (check VERIFY_AUTH_USER and VERIFY_AUTH_PASSWORD_FILE)"
    return _one_line(f"{what} answered {response.status_code}: {text or '(no body)'}{hint}")


def _transport(exc: httpx.HTTPError, what: str) -> str:
    return _one_line(f"{what}: {type(exc).__name__}: {exc or 'no answer'}")


def _one_line(text: str) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 3] + "..."


def main(config: VerifyConfig, out: Out = print) -> int:
    """The role: 0 when every step passed, else 1 (the failing step has said why)."""
    with config.client() as client:
        return 0 if run_verify(client, config.timeout, out) else 1
