"""The toolkit against this machine's real PostgreSQL and RabbitMQ: doctor checks and the
provisioning `invoke up` does (throwaway role, database, user and vhost, removed afterwards)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from invoke import Context, Exit

from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local import preflight as host
from desbordante_ops.local.credentials import ensure_secrets, read_secret
from desbordante_ops.local.provision import provision_postgres, provision_rabbitmq

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    return ensure_secrets(root=tmp_path)


def test_amqp_real_broker_and_impostor(listener: socket.socket) -> None:
    cfg = load_config("local", environ={})
    assert host.rabbitmq_reachable(cfg).ok

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(8)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    impostor = host.amqp_reachable("127.0.0.1", listener.getsockname()[1], timeout=2)
    thread.join(timeout=5)
    assert not impostor.ok and str(listener.getsockname()[1]) in impostor.detail


def test_amqp_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not host.amqp_reachable("127.0.0.1", port, timeout=1).ok


def test_postgres_real_and_wrong_port() -> None:
    assert host.postgres_reachable(Context(), load_config("local", environ={})).ok
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    wrong = load_config("local", flags={"POSTGRES_PORT": port}, environ={})
    result = host.postgres_reachable(Context(), wrong)
    assert not result.ok and port in result.detail


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[EnvConfig]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    cfg = load_config(
        "local",
        flags={
            "POSTGRES_USER": name,
            "POSTGRES_DB": name,
            "RABBITMQ_DEFAULT_USER": name,
            "RABBITMQ_VHOST": name,
        },
        environ={},
        root=REPO,
    )
    yield cfg
    with psycopg.connect(host=cfg.value("POSTGRES_HOST"), user="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "-q", "delete_user", name], capture_output=True, check=False)
        subprocess.run([ctl, "-q", "delete_vhost", name], capture_output=True, check=False)


def test_provision_postgres_real(
    throwaway: EnvConfig, secret_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = throwaway
    for _ in range(2):  # second run: exists, password re-synced
        provision_postgres(Context(), cfg, secret_files["POSTGRES_PASSWORD"])
    password = read_secret(secret_files["POSTGRES_PASSWORD"])
    with psycopg.connect(
        host=cfg.value("POSTGRES_HOST"),
        user=cfg.value("POSTGRES_USER"),
        dbname=cfg.value("POSTGRES_DB"),
        password=password,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (cfg.value("POSTGRES_USER"),)
    out = capsys.readouterr().out
    assert "created" in out and "exists (password synced)" in out
    assert password not in out


def test_provision_rabbitmq_real(
    throwaway: EnvConfig, secret_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl not installed")
    cfg = throwaway
    for _ in range(2):
        access = provision_rabbitmq(Context(), cfg, secret_files["RABBITMQ_DEFAULT_PASSWORD"])
    assert access.overrides == {}
    password = read_secret(secret_files["RABBITMQ_DEFAULT_PASSWORD"])
    check = subprocess.run(
        [ctl, "-q", "authenticate_user", cfg.value("RABBITMQ_DEFAULT_USER")],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    out = capsys.readouterr().out
    assert "created" in out and password not in out


def test_a_database_of_another_owner_is_one_clear_line(
    throwaway: EnvConfig, secret_files: dict[str, Path]
) -> None:
    """The configured database exists but belongs to another role: say so, touch nothing."""
    name = throwaway.value("POSTGRES_DB")
    with psycopg.connect(host="127.0.0.1", user="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # owned by postgres... then by another role
        conn.execute(f'CREATE ROLE "{name}_other"')
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{name}_other"')
    try:
        with pytest.raises(Exit, match=f"exists but belongs to {name}_other"):
            provision_postgres(Context(), throwaway, secret_files["POSTGRES_PASSWORD"])
    finally:
        with psycopg.connect(host="127.0.0.1", user="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'DROP ROLE IF EXISTS "{name}_other"')
