"""How the toolkit reaches PostgreSQL as its administrator (to create our role and database).

Two ways, tried in this order:
1. TCP: psycopg to POSTGRES_HOST:POSTGRES_PORT as POSTGRES_ADMIN_USER. Works where that user
   may log in without a prompt: trust auth (this CI machine), or a password libpq finds itself
   (~/.pgpass, PGPASSFILE).
2. The server's unix socket with peer auth, the default of a fresh Debian/Ubuntu install
   (`local all postgres peer`; 127.0.0.1 asks for a password): `psql` runs as the OS user
   POSTGRES_ADMIN_USER (`runuser -u postgres` as root, `sudo -n -u postgres` with passwordless
   sudo), only when the server is on this machine. The SQL goes on psql's standard input,
   never on a command line.
The application itself always logs in over TCP with its own role's password.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import psycopg
from invoke import Context, Exit
from psycopg import pq, sql

from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.local.machine import Privilege, find_tool, first_line, last_line, privilege

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PSQL_TIMEOUT = 60
Query = sql.SQL | sql.Composed


class Admin(Protocol):
    """SQL as the PostgreSQL administrator."""

    how: str

    def column(self, query: Query) -> list[str]:
        """The first column of every row of QUERY, as text."""
        ...

    def execute(self, statement: Query) -> None:
        """Run STATEMENT (Exit when it fails)."""
        ...


def answers(cfg: EnvConfig, connect_timeout: int = 3) -> bool:
    """The server at POSTGRES_HOST:POSTGRES_PORT accepts connections (libpq's ping)."""
    conninfo = psycopg.conninfo.make_conninfo(
        host=cfg.backend.POSTGRES_HOST,
        port=cfg.backend.POSTGRES_PORT,
        dbname=cfg.toolkit.POSTGRES_ADMIN_DB,
        connect_timeout=connect_timeout,
    )
    return pq.PGconn.ping(conninfo.encode()) == pq.Ping.OK


def tcp_connection(cfg: EnvConfig, connect_timeout: int = 5) -> psycopg.Connection:
    """An autocommit connection as POSTGRES_ADMIN_USER to POSTGRES_ADMIN_DB over TCP."""
    return psycopg.connect(
        host=cfg.backend.POSTGRES_HOST,
        port=cfg.backend.POSTGRES_PORT,
        user=cfg.toolkit.POSTGRES_ADMIN_USER,
        dbname=cfg.toolkit.POSTGRES_ADMIN_DB,
        autocommit=True,
        connect_timeout=connect_timeout,
    )


class TcpAdmin:
    """The administrator over a psycopg connection."""

    def __init__(self, cfg: EnvConfig, conn: psycopg.Connection) -> None:
        self.conn = conn
        backend = cfg.backend
        self.how = (
            f"{cfg.toolkit.POSTGRES_ADMIN_USER}@{backend.POSTGRES_HOST}:{backend.POSTGRES_PORT}"
        )

    def column(self, query: Query) -> list[str]:
        return [str(row[0]) for row in self.conn.execute(query).fetchall()]

    def execute(self, statement: Query) -> None:
        self.conn.execute(statement)


def error_line(output: str) -> str:
    """psql's ERROR line (never a line quoting the statement), else its last line."""
    errors = [line.strip() for line in output.splitlines() if "ERROR:" in line]
    return errors[0] if errors else last_line(output)


class PsqlAdmin:
    """The administrator through `psql` run as its OS user over the unix socket (peer auth)."""

    def __init__(self, c: Context, cfg: EnvConfig, rights: Privilege) -> None:
        self.c = c
        user = cfg.toolkit.POSTGRES_ADMIN_USER
        self.how = f"psql as OS user {user} (unix socket, peer auth)"
        psql = [
            "psql",
            "-X",
            "-w",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=terse",  # errors without the statement's text (it may hold a password)
            "-p",
            str(cfg.backend.POSTGRES_PORT),
            "-U",
            user,
            "-d",
            cfg.toolkit.POSTGRES_ADMIN_DB,
        ]
        self.command = shlex.join(rights.as_user(user, psql))

    def run(self, text: str) -> tuple[bool, str, str]:
        """Run the SQL TEXT (fed on standard input); (ok, stdout, stderr)."""
        result = attempt(self.c, self.command, stdin=text + ";\n", timeout=PSQL_TIMEOUT)
        return bool(result.ok), result.stdout or "", result.stderr or ""

    def _checked(self, statement: Query) -> str:
        done, out, err = self.run(statement.as_string(None))
        if not done:
            raise Exit(f"PostgreSQL ({self.how}) refused a statement: {error_line(err or out)}")
        return out

    def column(self, query: Query) -> list[str]:
        out = self._checked(query)
        return [line.split("|", 1)[0] for line in out.splitlines() if line.strip()]

    def execute(self, statement: Query) -> None:
        self._checked(statement)


def _socket_admin(c: Context, cfg: EnvConfig) -> tuple[PsqlAdmin | None, str]:
    """The psql route when it is possible and works, else (None, why not)."""
    if cfg.backend.POSTGRES_HOST not in LOOPBACK:
        return None, f"{cfg.backend.POSTGRES_HOST} is not this machine"
    if find_tool("psql") is None:
        return None, "psql is not installed"
    rights = privilege(c)
    if not rights.granted:
        return None, "not root and no passwordless sudo for psql as the postgres OS user"
    admin = PsqlAdmin(c, cfg, rights)
    done, out, err = admin.run("SELECT 1")
    if not done:
        return None, f"{admin.how}: {error_line(err or out)}"
    return admin, ""


def fix_hint(cfg: EnvConfig) -> str:
    user = cfg.toolkit.POSTGRES_ADMIN_USER
    return (
        f"run as root (or with passwordless sudo) so psql can run as the OS user {user}, "
        f"or let {user} log in over TCP (~/.pgpass or trust in pg_hba.conf)"
    )


@contextmanager
def open_admin(c: Context, cfg: EnvConfig) -> Iterator[Admin]:
    """The administrator over TCP, else through psql on the unix socket; Exit when neither."""
    host, port = cfg.backend.POSTGRES_HOST, cfg.backend.POSTGRES_PORT
    user = cfg.toolkit.POSTGRES_ADMIN_USER
    try:
        conn = tcp_connection(cfg)
    except psycopg.Error as exc:
        tcp_error = first_line(exc)
        if not answers(cfg):
            raise Exit(
                f"PostgreSQL at {host}:{port} does not answer ({tcp_error}); start it "
                "(`invoke up` starts a local one), or set POSTGRES_HOST/POSTGRES_PORT."
            ) from None
        admin, why = _socket_admin(c, cfg)
        if admin is None:
            raise Exit(
                f"Cannot log in to PostgreSQL as {user} over TCP ({tcp_error}) nor through "
                f"the socket ({why}); {fix_hint(cfg)}."
            ) from None
        yield admin
        return
    with conn:
        yield TcpAdmin(cfg, conn)


def server_version(admin: Admin) -> str:
    """The server's version (e.g. 15.14)."""
    return admin.column(sql.SQL("SHOW server_version"))[0].split()[0]
