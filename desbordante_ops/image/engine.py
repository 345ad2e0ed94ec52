"""The Docker engine the user already runs (DOCKER_HOST or the local socket), via docker-py.

The toolkit never installs or starts an engine: without one it says how to get one.
"""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException
from invoke import Exit

from desbordante_ops.core.checks import Check, Result

INSTALL_HINT = (
    "install Docker (https://docs.docker.com/engine/install/ or `apt-get install docker.io`) "
    "and start it (`sudo systemctl start docker`), or set DOCKER_HOST"
)


def connect(timeout: int = 600) -> docker.DockerClient:
    """A client of a running engine; one clear Exit with the fix when none answers."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as error:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        reason = str(error).splitlines()[0][:160]
        raise Exit(f"No Docker engine answers at {where} ({reason}); {INSTALL_HINT}.") from None
    return client


def engine_check() -> Check:
    """Doctor row: a Docker engine answers (needed for images.* and `up --docker`)."""

    def run() -> Result:
        try:
            version = connect(timeout=5).version().get("Version", "?")
        except Exit as exc:
            return Result(False, str(exc.message).split(";")[0])
        return Result(True, f"Docker engine {version}")

    return Check("Docker engine", run, INSTALL_HINT, required=False)
