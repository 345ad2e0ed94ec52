"""A reachable Docker engine: install Debian's packages and start `dockerd` when none answers.

The engine on this kind of machine runs without a bridge or iptables rules (every container
uses host networking), so `dockerd` is started as `dockerd --bridge=none --iptables=false`,
in the background, with its log in a file. Nothing here uses the docker CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import docker
from docker.errors import DockerException
from invoke import Exit

from desbordante_ops.console import ok, step

DOCKERD_ARGS = ("--bridge=none", "--iptables=false")
DOCKERD_LOG = Path("/var/log/desbordante-dockerd.log")
START_TIMEOUT_SECONDS = 60.0

# Debian packages the image tasks and their tests need, keyed by the program each provides.
PACKAGES: dict[str, str] = {
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
}


def _is_root() -> bool:
    return os.geteuid() == 0


def missing_packages(programs: Sequence[str]) -> list[str]:
    """Debian packages to install so that every program in PROGRAMS is on PATH (or in sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return sorted({PACKAGES[name] for name in programs if shutil.which(name, path=path) is None})


def ensure_packages(programs: Sequence[str]) -> None:
    """Install the Debian packages providing PROGRAMS when any is missing (root only)."""
    packages = missing_packages(programs)
    if not packages:
        return
    if not _is_root():
        raise Exit(
            f"Missing {', '.join(packages)}; run: sudo apt-get install -y {' '.join(packages)}"
        )
    step(f"Installing {', '.join(packages)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Exit(f"{' '.join(command[:2])} failed: {tail[0]}")
    ok(f"Installed {', '.join(packages)}")


def client(timeout: int = 600) -> docker.DockerClient:
    """A docker-py client for the engine of the environment (DOCKER_HOST or the local socket)."""
    return docker.from_env(timeout=timeout)


def ping() -> bool:
    """True when an engine answers."""
    try:
        return bool(client(timeout=5).ping())
    except DockerException:
        return False


def start_dockerd(log_path: Path = DOCKERD_LOG) -> subprocess.Popen[bytes]:
    """Start `dockerd` in the background (its own session, so it outlives this process)."""
    dockerd = shutil.which("dockerd", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if dockerd is None:
        raise Exit("dockerd is not installed; run: apt-get install -y docker.io")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [dockerd, *DOCKERD_ARGS],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_engine(
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = START_TIMEOUT_SECONDS,
    log_path: Path = DOCKERD_LOG,
) -> None:
    """Wait until the engine answers; fail early when the started dockerd exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping():
            return
        if process is not None and process.poll() is not None:
            raise Exit(f"dockerd exited with code {process.returncode}; see {log_path}")
        time.sleep(0.5)
    raise Exit(f"The Docker engine did not answer within {timeout:.0f}s; see {log_path}")


def ensure_engine(
    install: bool = True, timeout: float = START_TIMEOUT_SECONDS
) -> docker.DockerClient:
    """Return a client of a running engine, installing and starting one when needed."""
    if ping():
        return client()
    if os.environ.get("DOCKER_HOST"):
        raise Exit(f"No Docker engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}.")
    if not _is_root():
        raise Exit("No Docker engine answers; start one (dockerd needs root).")
    if install:
        ensure_packages(["dockerd"])
    step(f"Starting dockerd {' '.join(DOCKERD_ARGS)} (log: {DOCKERD_LOG})")
    process = start_dockerd()
    wait_for_engine(process, timeout)
    ok("Docker engine is running")
    return client()
