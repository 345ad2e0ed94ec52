"""The PostgreSQL administrator on a fresh Debian install (peer auth on the socket, a password on
127.0.0.1): psql as the postgres OS user, SQL on standard input only (MockContext; the real
route runs in tests/integration/test_up_starts_postgres.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import psycopg
import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import calls, commands

from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local import machine as host
from desbordante_ops.local import pgadmin
from desbordante_ops.local.credentials import ensure_secrets, read_secret
from desbordante_ops.local.preflight import postgres_reachable
from desbordante_ops.local.provision import provision_postgres

PSQL = "psql -X -w -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=terse -p 5432 -U postgres -d postgres"


@pytest.fixture
def cfg() -> EnvConfig:
    return load_config("local", environ={})


def tcp_refused(monkeypatch: pytest.MonkeyPatch, server_answers: bool = True) -> None:
    """The admin cannot log in over TCP (a fresh install asks for a password there)."""

    def refuse(cfg: EnvConfig, connect_timeout: int = 5) -> psycopg.Connection:
        raise psycopg.OperationalError('password authentication failed for user "postgres"')

    monkeypatch.setattr(pgadmin, "tcp_connection", refuse)
    monkeypatch.setattr(pgadmin, "answers", lambda cfg: server_answers)
    monkeypatch.setattr(pgadmin, "find_tool", lambda name: f"/usr/bin/{name}")


def as_uid(monkeypatch: pytest.MonkeyPatch, uid: int, sudo: str | None = "/usr/bin/sudo") -> None:
    monkeypatch.setattr(host.os, "geteuid", lambda: uid)
    monkeypatch.setattr(host, "find_tool", lambda name: sudo if name == "sudo" else None)


def sql_sent(c: MockContext) -> list[str]:
    streams = [call.kwargs["in_stream"] for call in calls(c)]
    return [stream.getvalue() for stream in streams if isinstance(stream, io.StringIO)]


def test_root_provisions_through_psql_as_postgres_with_sql_on_stdin(
    monkeypatch: pytest.MonkeyPatch,
    cfg: EnvConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tcp_refused(monkeypatch)
    as_uid(monkeypatch, 0)
    password_file = ensure_secrets(root=tmp_path)["POSTGRES_PASSWORD"]
    password = read_secret(password_file)
    c = MockContext(run={re.compile(".*"): Result("")})
    provision_postgres(c, cfg, password_file)

    assert set(commands(c)) == {f"runuser -u postgres -- {PSQL}"}
    assert sql_sent(c) == [
        "SELECT 1;\n",
        "SELECT 1 FROM pg_roles WHERE rolname = 'desbordante';\n",
        f"CREATE ROLE \"desbordante\" WITH LOGIN PASSWORD '{password}';\n",
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'desbordante';\n",
        'CREATE DATABASE "desbordante" OWNER "desbordante";\n',
    ]
    for call in calls(c):
        assert password not in call.args[0] and call.kwargs["hide"] is True
    out = capsys.readouterr().out
    assert "admin: psql as OS user postgres (unix socket, peer auth)" in out
    assert password not in out


def test_sudo_runs_psql_as_postgres(monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig) -> None:
    tcp_refused(monkeypatch)
    as_uid(monkeypatch, 1000)
    c = MockContext(run={"sudo -n true": Result(exited=0), re.compile(".*"): Result("15.14\n")})
    result = postgres_reachable(c, cfg)
    assert result.ok and "server 15.14" in result.detail
    assert commands(c) == [
        "sudo -n true",
        f"sudo -n -u postgres -- {PSQL}",
        f"sudo -n -u postgres -- {PSQL}",
    ]


def test_a_refused_statement_shows_the_error_not_the_statement(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig, tmp_path: Path
) -> None:
    tcp_refused(monkeypatch)
    as_uid(monkeypatch, 0)
    password_file = ensure_secrets(root=tmp_path)["POSTGRES_PASSWORD"]
    password = read_secret(password_file)
    refusal = Result(
        stderr=f"psql:<stdin>:1: ERROR:  permission denied to create role\n"
        f"LINE 1: CREATE ROLE x WITH LOGIN PASSWORD '{password}'\n        ^\n",
        exited=3,
    )
    c = MockContext(run=[Result("1\n"), Result(""), refusal])
    with pytest.raises(Exit) as stopped:
        provision_postgres(c, cfg, password_file)
    message = str(stopped.value.message)
    assert message.endswith(
        "refused a statement: psql:<stdin>:1: ERROR:  permission denied to create role"
    )
    assert password not in message


def test_without_root_or_sudo_it_says_how_to_get_in(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    tcp_refused(monkeypatch)
    as_uid(monkeypatch, 1000, sudo=None)
    with pytest.raises(Exit) as stopped:
        provision_postgres(MockContext(), cfg, Path("/unused"))
    message = str(stopped.value.message)
    assert message.startswith(
        "Cannot log in to PostgreSQL as postgres over TCP (password authentication failed"
    )
    assert "run as root (or with passwordless sudo)" in message and "~/.pgpass" in message


def test_a_server_that_does_not_answer_is_not_an_auth_problem(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    tcp_refused(monkeypatch, server_answers=False)
    result = postgres_reachable(MockContext(), cfg)
    assert not result.ok
    assert result.detail.startswith("PostgreSQL at 127.0.0.1:5432 does not answer")
    assert "`invoke up` starts a local one" in result.detail
