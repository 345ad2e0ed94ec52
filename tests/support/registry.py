"""A throwaway image registry on loopback: Debian's `docker-registry` with htpasswd auth.

Used by the image tests (push, remove, pull back) and handy for trying `images.push` locally.
The registry listens on 127.0.0.1 only; Docker talks plain HTTP to 127.0.0.0/8 registries
without any daemon setting. The password file is bcrypt (the registry accepts nothing else),
made with the bcrypt library: the password never reaches a command line.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import yaml

from support.dockerd import Unavailable, ensure_packages

START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Registry:
    """A running registry: its address (host:port) and one user."""

    address: str
    username: str
    password: str
    log: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """A bcrypt htpasswd file with one user."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    path.write_text(f"{username}:{hashed}\n", encoding="utf-8")
    path.chmod(0o600)


def write_config(workdir: Path, address: str, htpasswd: Path) -> Path:
    """The registry's configuration: file storage in WORKDIR, loopback address, htpasswd auth."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": address, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": {"htpasswd": {"realm": "desbordante-test", "path": str(htpasswd)}},
    }
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def wait_ready(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until GET /v2/ answers 401 (auth required); fail early when the registry exits."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"docker-registry exited with code {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://{address}/v2/", timeout=2).status_code == 401:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise Unavailable(f"docker-registry did not answer on {address}; see {log}")


@contextmanager
def serving(config: Path, address: str, log: Path) -> Iterator[None]:
    """`docker-registry serve CONFIG` (listening on ADDRESS, output to LOG) for the block."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(address, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running(workdir: Path, username: str, password: str) -> Iterator[Registry]:
    """Run a registry on a free 127.0.0.1 port for the duration of the block."""
    ensure_packages(["docker-registry"])
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    htpasswd = workdir / "htpasswd"
    write_htpasswd(htpasswd, username, password)
    config = write_config(workdir, address, htpasswd)
    log = workdir / "registry.log"
    with serving(config, address, log):
        yield Registry(address=address, username=username, password=password, log=log)
