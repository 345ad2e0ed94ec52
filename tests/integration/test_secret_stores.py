"""The rotation commands (argv + stdin) run for real against the local PostgreSQL and RabbitMQ.

In the cluster the same argv/stdin pair goes through a pod exec; here a local subprocess plays
the exec, so what is checked is the real behaviour of psql and rabbitmqctl with our input:
setting a password, and asking which of two passwords the store accepts (what a re-run of a
interrupted rotation relies on to finish or undo it). Roles and users are throwaway.
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
from psycopg import sql

from desbordante_ops.cluster.secrets import stores
from desbordante_ops.cluster.secrets.specs import new_password

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


PG_ENV = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "5432"}


def local_exec(argv: list[str], stdin: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def pg_exec(argv: list[str], stdin: str) -> tuple[int, str]:
    """The PodExec of the postgres pod, played by psql against the local server."""
    return local_exec(argv, stdin, PG_ENV)


def throwaway_role(options: str) -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    role = f"dops_rotation_{secrets.token_hex(4)}"
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"local PostgreSQL not reachable: {exc}")
    with conn:
        conn.execute(f'CREATE ROLE "{role}" {options}')
        try:
            yield role
        finally:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def pg_role() -> Iterator[str]:
    yield from throwaway_role("LOGIN")


@pytest.fixture
def pg_superuser() -> Iterator[str]:
    """Like POSTGRES_USER of the official image: a superuser, so it can read pg_authid."""
    yield from throwaway_role("LOGIN SUPERUSER")


def test_alter_role_via_stdin_stores_our_scram_verifier(pg_role: str) -> None:
    password = new_password()
    argv, stdin = stores.postgres_set_password(pg_role, password)
    code, output = pg_exec(argv, stdin)
    assert code == 0, output
    assert password not in output
    with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (pg_role,)
        ).fetchone()
    assert row is not None
    (stored,) = row
    assert stored == stdin.split("PASSWORD '")[1].split("'")[0]
    assert stored.startswith("SCRAM-SHA-256$4096:")


def test_our_scram_verifier_equals_libpq_for_the_same_salt() -> None:
    password = new_password()
    with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
        libpq = conn.pgconn.encrypt_password(password.encode(), b"someone", b"scram-sha-256")
    libpq_text = libpq.decode()
    iterations, salt = libpq_text.split("$")[1].split(":")
    ours = stores.scram_sha256_verifier(password, base64.b64decode(salt), int(iterations))
    assert ours == libpq_text
    assert stores.scram_matches(libpq_text, password)
    assert not stores.scram_matches(libpq_text, new_password())


def test_failing_sql_stops_with_nonzero_exit(pg_role: str) -> None:
    argv, stdin = stores.postgres_set_password(pg_role + "_missing", new_password())
    argv[argv.index("-U") + 1] = "postgres"
    code, output = pg_exec(argv, stdin)
    assert code != 0
    assert "does not exist" in output


@pytest.fixture
def mq_user() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    user = f"dops_rotation_{secrets.token_hex(4)}"
    code, output = local_exec(["rabbitmqctl", "add_user", user], new_password() + "\n")
    if code != 0:
        pytest.skip(f"local RabbitMQ not manageable with rabbitmqctl: {output.strip()[-200:]}")
    try:
        yield user
    finally:
        local_exec(["rabbitmqctl", "delete_user", user], "")


def test_rabbitmqctl_change_password_reads_stdin(mq_user: str) -> None:
    password = new_password()
    argv, stdin = stores.rabbitmq_set_password(mq_user, password)
    assert password not in argv
    code, output = local_exec(argv, stdin)
    assert code == 0, output
    assert password not in output
    good, _ = local_exec(["rabbitmqctl", "authenticate_user", mq_user], password + "\n")
    bad, _ = local_exec(["rabbitmqctl", "authenticate_user", mq_user], "wrong\n")
    assert good == 0
    assert bad != 0


# --- which password does the store accept (the check a re-run of a rotation relies on) -------


def test_postgres_accepts_tells_old_from_new_around_a_rotation(pg_superuser: str) -> None:
    store = stores.Store("postgres", pg_superuser)
    old, new = new_password(), new_password()
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        # as the image's entrypoint does it: a plain password, hashed by the server
        statement = sql.SQL("ALTER ROLE {} PASSWORD {}")
        conn.execute(statement.format(sql.Identifier(pg_superuser), sql.Literal(old)))
    candidates = {"current": old, "pending": new}
    assert stores.accepted(store, candidates, pg_exec) == "current"
    stores.set_password(store, new, pg_exec)
    assert stores.accepted(store, candidates, pg_exec) == "pending"
    assert stores.accepted(store, {"current": old}, pg_exec) is None


def test_postgres_role_without_password_accepts_nothing(pg_superuser: str) -> None:
    store = stores.Store("postgres", pg_superuser)
    assert stores.accepted(store, {"current": new_password()}, pg_exec) is None


def test_postgres_check_without_rights_is_a_one_line_store_error(pg_role: str) -> None:
    secret = new_password()
    with pytest.raises(stores.StoreError) as info:
        stores.accepted(stores.Store("postgres", pg_role), {"current": secret}, pg_exec)
    message = str(info.value)
    assert "psql` exited" in message and "permission denied" in message
    assert "\n" not in message and secret not in message


def test_rabbitmq_accepts_tells_old_from_new_around_a_rotation(mq_user: str) -> None:
    store = stores.Store("rabbitmq", mq_user)
    old, new = new_password(), new_password()
    stores.set_password(store, old, local_exec)
    candidates = {"current": old, "pending": new}
    assert stores.accepted(store, candidates, local_exec) == "current"
    stores.set_password(store, new, local_exec)
    assert stores.accepted(store, candidates, local_exec) == "pending"
    assert stores.accepted(store, {"current": old}, local_exec) is None  # exit 65: refused


@pytest.mark.parametrize(
    "node, code",
    [("rabbit@nohost", 69), ("rabbit@no-such-host.invalid", stores.RABBITMQ_REFUSED)],
)
def test_rabbitmq_failing_check_is_a_store_error_not_a_refusal(
    mq_user: str, node: str, code: int
) -> None:
    secret = new_password()

    def other_node(argv: list[str], stdin: str) -> tuple[int, str]:
        return local_exec([argv[0], "-n", node, *argv[1:]], stdin)

    with pytest.raises(stores.StoreError) as info:
        stores.accepted(stores.Store("rabbitmq", mq_user), {"current": secret}, other_node)
    message = str(info.value)
    assert f"rabbitmqctl` exited {code}" in message  # a bad node name exits 65 too
    assert secret not in message and "\n" not in message
