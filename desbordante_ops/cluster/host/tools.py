"""This host's tools for image and cluster work (doctor rows): Docker engine, kubectl, k3s."""

from __future__ import annotations

import shutil

import psutil
from invoke import Context

from desbordante_ops.cluster.host.k3s import BIN_PATH
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.image.engine import engine_check


def program_present(program: str) -> Result:
    path = shutil.which(program)
    return Result(path is not None, path or f"{program} not on PATH")


def k3s_running() -> Result:
    if not BIN_PATH.exists() and shutil.which("k3s") is None:
        return Result(
            False,
            "k3s not installed on this host (for a cluster elsewhere: `invoke doctor --env stage`)",
        )
    running = any(
        proc.info["name"] in ("k3s-server", "k3s") for proc in psutil.process_iter(["name"])
    )
    return Result(running, f"{BIN_PATH}, {'running' if running else 'not running'}")


def server_checks(c: Context) -> list[Check]:
    """Optional checks for image and cluster work."""
    return [
        engine_check(),
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
