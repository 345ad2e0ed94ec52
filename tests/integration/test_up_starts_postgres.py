"""`invoke up` with PostgreSQL installed but stopped, for real: it starts the cluster with
`pg_ctlcluster`, provisions it the way a fresh Debian install allows (peer auth for postgres
on the unix socket, a password on 127.0.0.1), and the stack becomes ready.

The stopped PostgreSQL is a throwaway Debian cluster (`pg_createcluster`, Debian's default
pg_hba.conf, its own free port), not the machine's `main` cluster: the start path is the same
(pg_lsclusters finds it down, pg_ctlcluster starts it) while the suites of other sessions keep
their database. `invoke up` runs as a subprocess with isolated settings (own run directory,
ports, role, database, RabbitMQ user and vhost); the cluster is always dropped and the RabbitMQ
user and vhost deleted afterwards, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT = 120
UP_TIMEOUT = 420

pytestmark = pytest.mark.timeout(600)


def run(
    *argv: str, timeout: float = COMMAND_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    version: str
    name: str
    port: int

    def status(self) -> str:
        listed = run("pg_lsclusters", "--no-header", self.version, self.name).stdout.split()
        return listed[3] if len(listed) > 3 else "missing"

    @property
    def hba(self) -> Path:
        return Path("/etc/postgresql") / self.version / self.name / "pg_hba.conf"


@pytest.fixture
def stopped_cluster() -> Iterator[Cluster]:
    """A new Debian cluster (the distribution's default authentication), started, then stopped."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        pytest.skip("needs root and Debian's postgresql-common (pg_createcluster)")
    versions = sorted((p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir()), key=float)
    cluster = Cluster(versions[-1], f"dso_{uuid.uuid4().hex[:8]}", free_port())
    created = run(
        "pg_createcluster",
        "--start",
        *("-p", str(cluster.port)),
        *("-o", "shared_buffers=16MB", "-o", "max_connections=40"),
        cluster.version,
        cluster.name,
    )
    assert created.returncode == 0, created.stderr
    try:
        assert cluster.status() == "online"
        stopped = run(
            "pg_ctlcluster", "--skip-systemctl-redirect", cluster.version, cluster.name, "stop"
        )
        assert stopped.returncode == 0, stopped.stderr
        yield cluster
    finally:
        dropped = run("pg_dropcluster", "--stop", cluster.version, cluster.name)
        assert dropped.returncode == 0, dropped.stderr


@pytest.fixture
def isolated(stopped_cluster: Cluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Process environment of an `invoke up` that shares nothing with other stacks."""
    name = f"dso_up_{uuid.uuid4().hex[:8]}"
    overrides = {
        "LOCAL_RUN_DIR": str(tmp_path / "run"),
        "UPLOADED_FILES_DIR_PATH": str(tmp_path / "uploads"),
        "APPLICATION_SERVER_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "POSTGRES_PORT": str(stopped_cluster.port),
        "POSTGRES_USER": name,
        "POSTGRES_DB": name,
        "RABBITMQ_DEFAULT_USER": name,
        "RABBITMQ_VHOST": name,
        "LOG_LEVEL": "WARNING",
        "COLUMNS": "250",  # rich wraps at 80 columns when not on a terminal
    }
    yield {**os.environ, **overrides}
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        run(ctl, "-q", "delete_user", name)
        run(ctl, "-q", "delete_vhost", name)


def invoke(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` of this checkout with ENV."""
    return run(sys.executable, "-m", "invoke", *args, timeout=timeout, env=env)


def test_up_starts_a_stopped_postgres_and_provisions_it_through_peer_auth(
    stopped_cluster: Cluster, isolated: dict[str, str]
) -> None:
    cluster = stopped_cluster
    rules = [line.split() for line in cluster.hba.read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule[0].startswith("#")]
    assert ["local", "all", "postgres", "peer"] in rules  # a fresh install's authentication
    assert all(rule[-1] != "trust" for rule in rules)
    assert cluster.status() == "down"

    try:
        done = invoke(isolated, "up", "--timeout", "180", timeout=UP_TIMEOUT)
        out = done.stdout
        print(out)
        assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
        assert (
            f"Starting PostgreSQL {cluster.version}/{cluster.name} as root: pg_ctlcluster "
            f"--skip-systemctl-redirect {cluster.version} {cluster.name} start"
        ) in out
        assert "admin: psql as OS user postgres (unix socket, peer auth)" in out
        assert "is ready" in out
        assert cluster.status() == "online"
        api = f"http://127.0.0.1:{isolated['APPLICATION_SERVER_PORT']}"
        ready = httpx.get(f"{api}/health/ready", timeout=10).json()
        assert ready["status"] == "ok", ready
    finally:
        down = invoke(isolated, "down", timeout=COMMAND_TIMEOUT)
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
