"""The rotation commands (argv + stdin) run for real against the local PostgreSQL and RabbitMQ.

In the cluster the same argv/stdin pair goes through a pod exec; here a local subprocess plays
the exec, so what is checked is the real behaviour of psql and rabbitmqctl with our input.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from desbordante_ops.cluster import secrets as cs

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def local_exec(argv: list[str], stdin: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def pg_role() -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    role = f"dops_rotation_{secrets.token_hex(4)}"
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"local PostgreSQL not reachable: {exc}")
    with conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            yield role
        finally:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_alter_role_via_stdin_stores_our_scram_verifier(pg_role: str) -> None:
    password = cs.new_password()
    argv, stdin = cs.postgres_rotation(pg_role, password)
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "5432"}
    code, output = local_exec(argv, stdin, env)
    assert code == 0, output
    assert password not in output
    with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
        (stored,) = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (pg_role,)
        ).fetchone()
    assert stored == stdin.split("PASSWORD '")[1].split("'")[0]
    assert stored.startswith("SCRAM-SHA-256$4096:")


def test_our_scram_verifier_equals_libpq_for_the_same_salt() -> None:
    password = cs.new_password()
    with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
        libpq = conn.pgconn.encrypt_password(password.encode(), b"someone", b"scram-sha-256")
    libpq_text = libpq.decode()
    iterations, salt = libpq_text.split("$")[1].split(":")
    ours = cs.scram_sha256_verifier(password, base64.b64decode(salt), int(iterations))
    assert ours == libpq_text


def test_failing_sql_stops_with_nonzero_exit(pg_role: str) -> None:
    argv, stdin = cs.postgres_rotation(pg_role + "_missing", cs.new_password())
    argv[argv.index("-U") + 1] = "postgres"
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "5432"}
    code, output = local_exec(argv, stdin, env)
    assert code != 0
    assert "does not exist" in output


@pytest.fixture
def mq_user() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    user = f"dops_rotation_{secrets.token_hex(4)}"
    code, output = local_exec(["rabbitmqctl", "add_user", user], cs.new_password() + "\n")
    if code != 0:
        pytest.skip(f"local RabbitMQ not manageable with rabbitmqctl: {output.strip()[-200:]}")
    try:
        yield user
    finally:
        local_exec(["rabbitmqctl", "delete_user", user], "")


def test_rabbitmqctl_change_password_reads_stdin(mq_user: str) -> None:
    password = cs.new_password()
    argv, stdin = cs.rabbitmq_rotation(mq_user, password)
    assert password not in argv
    code, output = local_exec(argv, stdin)
    assert code == 0, output
    assert password not in output
    good, _ = local_exec(["rabbitmqctl", "authenticate_user", mq_user], password + "\n")
    bad, _ = local_exec(["rabbitmqctl", "authenticate_user", mq_user], "wrong\n")
    assert good == 0
    assert bad != 0
