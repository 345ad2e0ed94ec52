"""A Docker engine for the test suites: Debian's docker.io, started the way this CI kind allows.

These machines have no bridge networking and nothing can be pulled, so `dockerd` runs as
`dockerd --bridge=none --iptables=false` (every container uses host networking). This is a
property of the CI machines, not of the product: the toolkit itself only connects to the
engine a user already runs.
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

DOCKERD_ARGS = ("--bridge=none", "--iptables=false")
NETWORK = "host"  # what builds and containers use on such an engine
DOCKERD_LOG = Path("/var/log/desbordante-dockerd.log")
START_TIMEOUT_SECONDS = 60.0
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# Debian packages the image tests need, keyed by the program each provides.
PACKAGES: dict[str, str] = {
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
}


class Unavailable(RuntimeError):
    """The engine cannot be had on this machine (the tests skip or fail with the reason)."""


def ensure_packages(programs: Sequence[str]) -> None:
    """Install the Debian packages providing PROGRAMS when any is missing (root only)."""
    packages = sorted(
        {PACKAGES[name] for name in programs if shutil.which(name, path=SBIN_PATH) is None}
    )
    if not packages:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"missing {', '.join(packages)} and not root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"{' '.join(command[:2])} failed: {tail[0]}")


def ping() -> bool:
    try:
        return bool(docker.from_env(timeout=5).ping())
    except DockerException:
        return False


def ensure_engine() -> docker.DockerClient:
    """A client of a running engine; installs and starts dockerd when root and none answers."""
    if not ping():
        if os.geteuid() != 0:
            raise Unavailable("no Docker engine answers and starting one needs root")
        ensure_packages(["dockerd"])
        dockerd = shutil.which("dockerd", path=SBIN_PATH)
        assert dockerd is not None
        DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with DOCKERD_LOG.open("ab") as log:
            process = subprocess.Popen(
                [dockerd, *DOCKERD_ARGS],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ping():
            if process.poll() is not None:
                raise Unavailable(f"dockerd exited with {process.returncode}; see {DOCKERD_LOG}")
            if time.monotonic() > deadline:
                raise Unavailable(f"dockerd did not answer in time; see {DOCKERD_LOG}")
            time.sleep(0.5)
    return docker.from_env(timeout=600)
