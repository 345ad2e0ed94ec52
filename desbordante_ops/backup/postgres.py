"""The PostgreSQL command lines of a backup and a restore, the same for every environment.

Each takes CONNECT, the connection options as shell text: quoted values for the local stack
(`-h 127.0.0.1 -p 5432 -U postgres -d desbordante`, or without `-h` on the unix socket), or
`-U "$POSTGRES_USER" -d "$POSTGRES_DB"` expanded by the shell inside the postgres pod, and AS,
a prefix that runs the server's clients as another OS user (`runuser -u postgres --` for peer
authentication) or "". No password is ever part of them: the local admin connects like
`invoke up` does (trust or ~/.pgpass over TCP, else peer auth on the socket), the pod's own user
over its unix socket. Dumps go to standard output; the caller's shell redirects them to a file,
so they never pass through Invoke and a client running as another user needs no write access.

Restore = one transaction in psql: drop and recreate the schema `public` (so objects that newer
migrations added go too, and migrations can run again after an older archive), then the
dump's SQL (`pg_restore -f -`, without owners and privileges: objects belong to ROLE, the
service's user, whatever the names were where the archive comes from), then COMMIT. Any
error rolls the whole restore back and leaves the database as it was. The pipeline needs
bash (`pipefail`): the local shell of Invoke, and `bash -c` in the postgres pod.
"""

from __future__ import annotations

import shlex

REVISION_QUERY = "SELECT version_num FROM alembic_version"
MISSING_TABLE = 'relation "alembic_version" does not exist'
PREAMBLE = (
    "SET client_min_messages = warning",
    # A session still holding a table (a writer that was not stopped) fails the restore
    # (rolled back) instead of making it wait for ever.
    "SET lock_timeout = '60s'",
    "DROP SCHEMA IF EXISTS public CASCADE",
    "CREATE SCHEMA public AUTHORIZATION pg_database_owner",
    "GRANT USAGE ON SCHEMA public TO PUBLIC",
)


def connect_options(host: str | None, port: int, user: str, dbname: str) -> str:
    """Quoted connection options: over TCP to HOST, or the local unix socket when None."""
    where = ["-h", host] if host else []
    return shlex.join([*where, "-p", str(port), "-U", user, "-d", dbname])


def dump_command(connect: str, as_: str = "") -> str:
    """`pg_dump -Fc` (one consistent snapshot) to standard output."""
    return f"{as_}pg_dump -Fc --no-password {connect}"


def revision_command(connect: str, as_: str = "") -> str:
    """The database's alembic revision on one line (psql fails when the table is missing)."""
    return f"{as_}psql -X -A -t -q --no-password {connect} -c {shlex.quote(REVISION_QUERY)}"


def parse_revision(ok: bool, stdout: str, stderr: str) -> tuple[str | None, str]:
    """(revision, error) from a revision command's outcome; (None, "") for an empty database."""
    if ok:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        return (lines[0] if lines else None), ""
    if MISSING_TABLE in stderr:
        return None, ""
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    return None, errors[-1] if errors else "psql failed without a message"


def restore_command(connect: str, role: str | None = None, dump: str = "", as_: str = "") -> str:
    """The bash pipeline restoring DUMP (a path) or standard input, as one transaction.

    COMMIT is sent only after pg_restore finished without error: a dump it cannot read (or a
    version it does not know) ends psql's input inside the transaction, which rolls back.
    ROLE: the service's database user, when CONNECT is another (an admin) user.
    """
    statements = ["BEGIN", *PREAMBLE, *([f'SET ROLE "{role}"'] if role else [])]
    lines = " ".join(shlex.quote(statement) for statement in statements)
    source = f" {shlex.quote(dump)}" if dump else ""
    return (
        "set -o pipefail; "
        f"{{ printf '%s;\\n' {lines}; "
        f"pg_restore --no-owner --no-privileges -f -{source} && printf 'COMMIT;\\n'; }} | "
        f"{as_}psql -X -q -o /dev/null -v ON_ERROR_STOP=1 --no-password {connect}"
    )
