"""Process supervision of the local stack with supervisord: conf rendering and XML-RPC client.

The conf (mode 0600) lives in the run directory with the unix socket, pid file and logs.
Programs are not autostarted: `invoke up` starts each missing one over XML-RPC, so running
it twice starts only what is missing. Secrets reach programs only as `*_FILE` paths.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import http.client
import io
import os
import shlex
import tempfile
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from invoke import Exit
from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

SERVICES = ("api", "worker", "flower")
# Deletes old datasets and results every hour (`desbordante-service retention --interval`);
# a program only when RETENTION_DAYS > 0, and not a service: no port, no health, no status row.
RETENTION = "retention"
RETENTION_INTERVAL_SECONDS = 3600
# supervisord programs and the backend command each runs.
PROGRAMS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in SERVICES},
    RETENTION: (RETENTION, "--interval", str(RETENTION_INTERVAL_SECONDS)),
}
# Bounded graceful stop: SIGTERM, then SIGKILL to the whole process group after this long.
STOP_WAIT_SECONDS = {"api": 15, "worker": 30, "flower": 10, RETENTION: 10}
START_SECONDS = 3
RPC_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)
RPC_TIMEOUT = 120.0  # stopAllProcesses waits for every bounded stop in turn
SOCKET_PATH_MAX = 80


@dataclass(frozen=True)
class StackPaths:
    """Files of the local stack under its run directory."""

    run_dir: Path

    @property
    def conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def socket(self) -> Path:
        """In the run directory, unless that path is too long for a unix socket.

        (supervisord binds a temporary name a little longer than this one, and AF_UNIX paths
        are limited to 107 bytes, so a deep checkout gets a short per-user directory instead.)
        """
        socket = self.run_dir / "supervisor.sock"
        if len(str(socket)) <= SOCKET_PATH_MAX:
            return socket
        digest = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"desbordante-{os.getuid()}" / f"{digest}.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def supervisord_log(self) -> Path:
        return self.logs_dir / "supervisord.log"

    def log(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def prepare(self) -> None:
        """Create the run and log directories (0700: logs may name paths and users)."""
        for directory in (self.run_dir, self.logs_dir, self.socket.parent):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _quote(key: str, value: str) -> str:
    if any(ch in value for ch in '"\n\r'):
        raise Exit(f"{key} contains a quote or newline, which supervisord cannot pass; change it.")
    return '"' + value + '"'


def programs(env: Mapping[str, str]) -> tuple[str, ...]:
    """The programs of a stack run with ENV: the services, and retention if RETENTION_DAYS > 0."""
    days = env.get("RETENTION_DAYS", "").strip()
    return (*SERVICES, RETENTION) if days.isdigit() and int(days) > 0 else SERVICES


def program_command(python: str, service: str) -> str:
    """Command line of one program: the backend entry point from this Python environment."""
    return shlex.join([python, "-m", "desbordante_service", *PROGRAMS[service]])


def render_conf(paths: StackPaths, env: Mapping[str, str], python: str, directory: Path) -> str:
    """The supervisord configuration of the local stack (configparser writes the syntax).

    supervisord expands `%(name)s` in values, so every `%` is doubled on the way in.
    """
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    environment = ",".join(f"{key}={_quote(key, value)}" for key, value in sorted(env.items()))
    sections: dict[str, dict[str, object]] = {
        "unix_http_server": {"file": paths.socket, "chmod": "0700"},
        "supervisord": {
            "logfile": paths.supervisord_log,
            "logfile_maxbytes": "5MB",
            "logfile_backups": 2,
            "pidfile": paths.pidfile,
            "childlogdir": paths.logs_dir,
            "directory": directory,
            "identifier": "desbordante-local",
            "nodaemon": "false",
            "umask": "077",
        },
        "rpcinterface:supervisor": {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
        },
        "supervisorctl": {"serverurl": f"unix://{paths.socket}"},
    }
    for service in programs(env):
        sections[f"program:{service}"] = {
            "command": program_command(python, service),
            "directory": directory,
            "autostart": "false",
            "autorestart": "unexpected",
            "exitcodes": 0,
            "startsecs": START_SECONDS,
            "startretries": 2,
            "stopsignal": "TERM",
            "stopwaitsecs": STOP_WAIT_SECONDS[service],
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",
            "stdout_logfile": paths.log(service),
            "stdout_logfile_maxbytes": "10MB",
            "stdout_logfile_backups": 3,
            "environment": environment,
        }
    for name, options in sections.items():
        parser[name] = {key: str(value).replace("%", "%%") for key, value in options.items()}
    out = io.StringIO()
    out.write("; Generated by `invoke up` (desbordante_ops.local); rewritten on every start.\n")
    parser.write(out)
    return out.getvalue()


def supervisord_command(python: str, conf: Path) -> list[str]:
    """Argv that starts supervisord as a daemon with CONF."""
    return [python, "-m", "supervisor.supervisord", "-c", str(conf)]


class _UnixConnection(UnixStreamHTTPConnection):
    """Unix-socket HTTP connection with a timeout, so a hung supervisord cannot hang us."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(RPC_TIMEOUT)


class _Transport(SupervisorTransport):
    def __init__(self, socket_path: Path) -> None:
        super().__init__(None, None, serverurl=f"unix://{socket_path}")

        def get_connection() -> _UnixConnection:
            conn = _UnixConnection("localhost")
            conn.socketfile = str(socket_path)
            return conn

        self._get_connection = get_connection


class Supervisor:
    """Client of one supervisord over its unix socket."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    def _proxy(self) -> Any:
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=_Transport(self.paths.socket)
        )

    def alive(self) -> bool:
        """True when supervisord answers on the socket and is RUNNING."""
        if not self.paths.socket.exists():
            return False
        try:
            state = self._proxy().supervisor.getState()
        except RPC_ERRORS:
            return False
        return state.get("statename") == "RUNNING"

    def pid(self) -> int | None:
        """PID of supervisord from its pid file, if that process exists."""
        try:
            pid = int(self.paths.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def processes(self) -> dict[str, dict[str, Any]]:
        """Process info by program name (statename, pid, spawnerr, exitstatus...)."""
        return {info["name"]: info for info in self._proxy().supervisor.getAllProcessInfo()}

    def _control(self, method: str, name: str, wait: bool, harmless: str) -> None:
        """Call METHOD(NAME, WAIT); a fault naming HARMLESS (nothing to do) is no error."""
        try:
            getattr(self._proxy().supervisor, method)(name, wait)
        except xmlrpc.client.Fault as fault:
            if harmless not in fault.faultString:
                raise

    def start(self, name: str) -> None:
        """Start program NAME without waiting for it to be RUNNING."""
        self._control("startProcess", name, False, "ALREADY_STARTED")

    def stop(self, name: str) -> None:
        """Stop program NAME (SIGTERM, SIGKILL after its stopwaitsecs); waits."""
        self._control("stopProcess", name, True, "NOT_RUNNING")

    def stop_all(self) -> list[dict[str, Any]]:
        """Stop every program (SIGTERM, SIGKILL after stopwaitsecs); waits."""
        return self._proxy().supervisor.stopAllProcesses(True)

    def shutdown(self) -> None:
        """Ask supervisord to exit."""
        with contextlib.suppress(*RPC_ERRORS):
            self._proxy().supervisor.shutdown()

    def pids(self) -> set[int]:
        """PIDs of supervisord and all its descendants (our stack's processes)."""
        pid = self.pid()
        if pid is None:
            return set()
        try:
            root = psutil.Process(pid)
            return {pid, *(child.pid for child in root.children(recursive=True))}
        except psutil.Error:
            return set()
