"""Host checks of the local stack (run by `invoke up` and `invoke doctor`)."""

from __future__ import annotations

import errno
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
from amqp.exceptions import AccessRefused
from invoke import Context, Exit
from kombu import Connection

import desbordante_service
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.local.machine import first_line
from desbordante_ops.local.pgadmin import open_admin, server_version

MIN_PYTHON = (3, 11)
CONNECT_TIMEOUT = 3.0


def python_version(version: Sequence[int] = tuple(sys.version_info[:3])) -> Result:
    shown = ".".join(str(part) for part in version)
    return Result(tuple(version[:2]) >= MIN_PYTHON, f"Python {shown} ({sys.executable})")


def backend_installed() -> Result:
    """Which backend this environment runs (the toolkit needs it installed to start at all)."""
    where = Path(desbordante_service.__file__).parent
    return Result(True, f"desbordante_service {desbordante_service.__version__} at {where}")


def postgres_reachable(c: Context, cfg: EnvConfig) -> Result:
    """The server answers and its administrator can log in (over TCP, else psql on the socket)."""
    host, port = cfg.backend.POSTGRES_HOST, cfg.backend.POSTGRES_PORT
    try:
        with open_admin(c, cfg) as admin:
            version = server_version(admin)
    except Exit as exc:
        return Result(False, str(exc.message))
    return Result(True, f"{host}:{port} answers; admin: {admin.how}; server {version}")


def amqp_reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> Result:
    """An AMQP broker answers at HOST:PORT (kombu's handshake; a refused login still counts)."""
    url = f"amqp://guest:guest@{host}:{port}//"
    try:
        with Connection(url, connect_timeout=timeout, transport_options={"max_retries": 0}) as conn:
            conn.connect()
    except AccessRefused:
        return Result(True, f"{host}:{port} speaks AMQP (guest login refused, as it should be)")
    except Exception as exc:  # socket errors, protocol errors: not a usable broker
        return Result(False, f"{host}:{port}: {first_line(exc)}")
    return Result(True, f"{host}:{port} speaks AMQP")


def rabbitmq_reachable(cfg: EnvConfig) -> Result:
    return amqp_reachable(cfg.backend.RABBITMQ_HOST, cfg.backend.RABBITMQ_PORT)


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


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


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


def disk_free(path: Path, min_mb: int) -> Result:
    path.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(path).free // (1024 * 1024)
    return Result(free_mb >= min_mb, f"{free_mb} MiB free at {path} (need {min_mb} MiB)")


def rabbitmqctl_usable(c: Context) -> Result:
    path = shutil.which("rabbitmqctl")
    if path is None:
        return Result(False, "rabbitmqctl not on PATH; the stack will use guest/guest on vhost /")
    result = attempt(c, f"{path} -q status", timeout=20)
    if not result.ok:
        return Result(False, f"{path} cannot talk to the node (run as root or the rabbitmq user)")
    return Result(True, path)


def local_checks(
    c: Context, cfg: EnvConfig, ours: Callable[[], set[int]] | None = None
) -> list[Check]:
    """Checks the local stack depends on (`invoke up` runs these first)."""
    backend = cfg.backend
    api_port, flower_port = backend.APPLICATION_SERVER_PORT, backend.FLOWER_PORT
    return [
        Check("Python version", python_version, "install Python 3.11 and use it for the venv"),
        Check("backend package", backend_installed, "python3 -m pip install -e ./backend"),
        Check(
            "PostgreSQL reachable",
            lambda: postgres_reachable(c, cfg),
            "`invoke up` installs and starts a local one (as root or with sudo), or set "
            "POSTGRES_HOST/POSTGRES_PORT/POSTGRES_ADMIN_USER",
        ),
        Check(
            "RabbitMQ reachable",
            lambda: rabbitmq_reachable(cfg),
            "`invoke up` installs and starts a local one (as root or with sudo), or set "
            "RABBITMQ_HOST/RABBITMQ_PORT in env/local.env",
        ),
        Check(
            "rabbitmqctl usable",
            lambda: rabbitmqctl_usable(c),
            "run as root on the broker host to get a dedicated vhost and user",
            required=False,
        ),
        Check(
            f"API port {api_port} free",
            lambda: port_free(
                backend.APPLICATION_SERVER_HOST, api_port, "APPLICATION_SERVER_PORT", ours
            ),
            "free the port or set APPLICATION_SERVER_PORT",
        ),
        Check(
            f"Flower port {flower_port} free",
            lambda: port_free(backend.FLOWER_HOST, flower_port, "FLOWER_PORT", ours),
            "free the port or set FLOWER_PORT",
        ),
        Check(
            "free disk",
            lambda: disk_free(cfg.uploads_dir, cfg.toolkit.MIN_FREE_DISK_MB),
            "free disk space, or lower MIN_FREE_DISK_MB",
        ),
    ]
