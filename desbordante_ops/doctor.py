"""Host checks: a list of `Check` objects, run and shown as a table (check, result, how to fix).

`local_checks(cfg)` is what the local stack needs (run by `invoke up`); `tooling_checks()` covers
image and cluster work (optional). Other modules build their own lists from the same pieces.
"""

from __future__ import annotations

import errno
import importlib.util
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from invoke import Exit

from .config import EnvConfig
from .console import print_table

MIN_PYTHON = (3, 11)
CONNECT_TIMEOUT = 3.0
# AMQP 0-9-1 protocol header; a broker answers with a Connection.Start method frame.
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


@dataclass(frozen=True)
class Result:
    """Outcome of one check; FIX overrides the check's generic advice."""

    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Check:
    """One host check: NAME, whether it is REQUIRED, RUN() -> Result and generic FIX advice."""

    name: str
    run: Callable[[], Result]
    fix: str
    required: bool = True


@dataclass
class Report:
    """Results of a list of checks, in order."""

    rows: list[tuple[Check, Result]] = field(default_factory=list)

    @property
    def failed_required(self) -> list[Check]:
        return [check for check, result in self.rows if check.required and not result.ok]


def _guard(check: Check) -> Result:
    try:
        return check.run()
    except Exception as exc:  # a check must report, never crash the doctor
        return Result(False, f"{type(exc).__name__}: {exc}")


def run_checks(checks: Iterable[Check]) -> Report:
    """Run every check (exceptions become failures)."""
    report = Report()
    for check in checks:
        report.rows.append((check, _guard(check)))
    return report


def _result_cell(check: Check, result: Result) -> str:
    if result.ok:
        return f"[green]ok[/] {result.detail}"
    label = "[red]FAIL[/]" if check.required else "[yellow]missing[/] (optional)"
    return f"{label} {result.detail}"


def print_report(report: Report, title: str = "doctor") -> None:
    """The table: check, result, how to fix (only for failures)."""
    rows = [
        (check.name, _result_cell(check, result), "" if result.ok else (result.fix or check.fix))
        for check, result in report.rows
    ]
    print_table(title, ("check", "result", "how to fix"), rows)


def ensure(report: Report) -> None:
    """Exit non-zero when a required check failed."""
    failed = report.failed_required
    if failed:
        names = ", ".join(check.name for check in failed)
        raise Exit(
            f"Required check(s) failed: {names}. Fix them as shown in the table, then retry."
        )


# --- individual checks -------------------------------------------------------------------------


def python_version(version: Sequence[int] = tuple(sys.version_info[:3])) -> Result:
    shown = ".".join(str(part) for part in version)
    return Result(tuple(version[:2]) >= MIN_PYTHON, f"Python {shown} ({sys.executable})")


def backend_installed() -> Result:
    spec = importlib.util.find_spec("desbordante_service")
    if spec is None:
        return Result(False, "desbordante_service is not importable")
    return Result(True, f"desbordante_service at {Path(spec.origin or '?').parent}")


def postgres_reachable(cfg: EnvConfig) -> Result:
    import psycopg

    host, port = cfg["POSTGRES_HOST"], cfg.get_int("POSTGRES_PORT")
    user, dbname = cfg["POSTGRES_ADMIN_USER"], cfg["POSTGRES_ADMIN_DB"]
    try:
        with psycopg.connect(
            host=host, port=port, user=user, dbname=dbname, connect_timeout=int(CONNECT_TIMEOUT)
        ) as conn:
            version = conn.info.server_version
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Result(False, f"{host}:{port} as {user}: {message}")
    return Result(True, f"{host}:{port} as {user}, server {version // 10000}.{version % 10000}")


def amqp_reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> Result:
    """TCP connect plus AMQP handshake start: the broker must answer with Connection.Start."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(AMQP_HEADER)
            frame = sock.recv(11)
    except OSError as exc:
        return Result(False, f"{host}:{port}: {exc.strerror or exc}")
    # frame type 1 (method), channel 0, then class 10 / method 10 = Connection.Start
    if len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a":
        return Result(True, f"{host}:{port} speaks AMQP 0-9-1")
    return Result(False, f"{host}:{port} answered, but not as an AMQP 0-9-1 broker")


def rabbitmq_reachable(cfg: EnvConfig) -> Result:
    return amqp_reachable(cfg["RABBITMQ_HOST"], cfg.get_int("RABBITMQ_PORT"))


def listener_pid(port: int) -> int | None:
    """PID of the process listening on PORT (TCP), if it can be seen."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def port_free(host: str, port: int, key: str, ours: Callable[[], set[int]] | None = None) -> Result:
    """PORT can be bound on HOST, or is held by a process of our own running stack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return Result(False, f"{host}:{port}: {exc.strerror}")
        else:
            return Result(True, f"{host}:{port} is free")
    pid = listener_pid(port)
    if pid is not None and ours is not None and pid in ours():
        return Result(True, f"{host}:{port} held by our running stack (pid {pid})")
    holder = f"pid {pid} ({_process_name(pid)})" if pid else "another process"
    return Result(
        False,
        f"{host}:{port} is in use by {holder}",
        f"stop {holder}, or set {key} to a free port (env/local.env or environment)",
    )


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def disk_free(path: Path, min_mb: int) -> Result:
    path.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    return Result(free_mb >= min_mb, f"{free_mb} MiB free at {path} (need {min_mb} MiB)")


def docker_reachable() -> Result:
    import docker

    try:
        client = docker.from_env(timeout=3)
        version = client.version().get("Version", "?")
        client.close()
    except docker.errors.DockerException as exc:
        return Result(False, f"Docker engine not reachable: {str(exc).splitlines()[0][:120]}")
    return Result(True, f"Docker engine {version}")


def program_present(program: str) -> Result:
    path = shutil.which(program)
    return Result(path is not None, path or f"{program} not on PATH")


def k3s_running() -> Result:
    path = shutil.which("k3s")
    if path is None:
        return Result(False, "k3s not installed")
    running = any(
        proc.info["name"] == "k3s-server" or proc.info["name"] == "k3s"
        for proc in psutil.process_iter(["name"])
    )
    return Result(running, f"{path}, {'running' if running else 'not running'}")


def rabbitmqctl_usable() -> Result:
    path = shutil.which("rabbitmqctl")
    if path is None:
        return Result(False, "rabbitmqctl not on PATH; the stack will use guest/guest on vhost /")
    try:
        done = subprocess.run([path, "-q", "status"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return Result(False, f"{path} status timed out")
    if done.returncode != 0:
        return Result(False, f"{path} cannot talk to the node (run as root or the rabbitmq user)")
    return Result(True, path)


# --- check lists ------------------------------------------------------------------------------


def local_checks(cfg: EnvConfig, ours: Callable[[], set[int]] | None = None) -> list[Check]:
    """Checks the local stack depends on (`invoke up` runs these first)."""
    api_port, flower_port = cfg.get_int("APPLICATION_SERVER_PORT"), cfg.get_int("FLOWER_PORT")
    return [
        Check("Python version", python_version, "install Python 3.11 and use it for the venv"),
        Check(
            "backend package",
            backend_installed,
            "python3 -m pip install -e ./backend",
        ),
        Check(
            "PostgreSQL reachable",
            lambda: postgres_reachable(cfg),
            "start PostgreSQL, or set POSTGRES_HOST/POSTGRES_PORT/POSTGRES_ADMIN_USER",
        ),
        Check(
            "RabbitMQ reachable",
            lambda: rabbitmq_reachable(cfg),
            "start RabbitMQ, or set RABBITMQ_HOST/RABBITMQ_PORT in env/local.env",
        ),
        Check(
            "rabbitmqctl usable",
            rabbitmqctl_usable,
            "run as root on the broker host to get a dedicated vhost and user",
            required=False,
        ),
        Check(
            f"API port {api_port} free",
            lambda: port_free(
                cfg["APPLICATION_SERVER_HOST"], api_port, "APPLICATION_SERVER_PORT", ours
            ),
            "free the port or set APPLICATION_SERVER_PORT",
        ),
        Check(
            f"Flower port {flower_port} free",
            lambda: port_free(cfg["FLOWER_HOST"], flower_port, "FLOWER_PORT", ours),
            "free the port or set FLOWER_PORT",
        ),
        Check(
            "free disk",
            lambda: disk_free(
                Path(cfg["UPLOADED_FILES_DIR_PATH"]), cfg.get_int("MIN_FREE_DISK_MB")
            ),
            "free disk space, or lower MIN_FREE_DISK_MB",
        ),
    ]


def tooling_checks() -> list[Check]:
    """Optional checks for image and cluster work."""
    return [
        Check(
            "Docker engine",
            docker_reachable,
            "apt-get install -y docker.io, then start dockerd (needed for `images.*`)",
            required=False,
        ),
        Check(
            "kubectl",
            lambda: program_present("kubectl"),
            "install kubectl (needed for manifests and deploys)",
            required=False,
        ),
        Check(
            "k3s",
            k3s_running,
            "invoke bootstrap on the server (needed for cluster work)",
            required=False,
        ),
    ]


def check_local(cfg: EnvConfig, ours: Callable[[], set[int]] | None = None) -> Report:
    """Run, show and enforce the local checks (used by `invoke up`)."""
    report = run_checks(local_checks(cfg, ours))
    print_report(report, "doctor (local stack)")
    ensure(report)
    return report
