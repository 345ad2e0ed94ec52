"""Real `desbordante-service` processes for the suites on real services, and bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

T = TypeVar("T")
POLL = 0.1


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = POLL) -> T:
    """Call CHECK until it returns a truthy value; AssertionError naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class ServiceProcess:
    """One `python -m desbordante_service ROLE` process with its own log file."""

    def __init__(self, role: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.role = role
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "desbordante_service", role, *args],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_log(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if not self.alive():
                raise AssertionError(f"{self.role} exited:\n{self.output()[-3000:]}")
            return False

        wait_for(seen, timeout, f"{self.role} to log {text!r}", interval=0.2)

    def kill_hard(self) -> None:
        """SIGKILL the process and its children at once, like a crashed node."""
        try:
            parent = psutil.Process(self.pid)
            procs = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after TIMEOUT seconds; returns the exit code."""
        self.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_hard()
            return self.process.returncode


class Api(ServiceProcess):
    """The HTTP API on its own loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        env = {**env, "APPLICATION_SERVER_HOST": "127.0.0.1"}
        env["APPLICATION_SERVER_PORT"] = str(self.port)
        super().__init__("api", env, log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)
        wait_for(self._live, 60, "the API to answer /health/live", interval=0.2)

    def _live(self) -> bool:
        if not self.alive():
            raise AssertionError(f"api exited:\n{self.output()[-3000:]}")
        try:
            return self.client.get("/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 30) -> int | None:
        self.client.close()
        return super().stop(timeout)


class Worker(ServiceProcess):
    """A Celery worker, ready once it logs `ready.`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.name = f"drill-{uuid.uuid4().hex[:8]}@localhost"
        super().__init__("worker", env, log, "--hostname", self.name)
        self.wait_log("ready.")
