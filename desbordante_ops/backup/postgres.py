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

Row counts of a dump (`count_command`): `pg_restore --data-only -f -` writes the dump's data as
SQL text, one `COPY <table> (...) FROM stdin;` block per table, one line per row (COPY's text
format escapes newlines, and a row is never the block's end marker, a lone backslash-dot),
and awk prints the
number of lines of each block with its COPY line, so only the counts come back. They describe
exactly what the dump holds. `count_rows_command` counts the same tables in a database a dump
was restored into; its table names come from an archive's manifest and are used only when they
are identifiers as pg_dump writes them (`TABLE_NAME`), so no manifest can inject SQL.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

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
# Per COPY block of `pg_restore --data-only -f -`: "<rows>\t<its COPY line>". Rules for lines
# inside a block come first: a row that looks like a COPY line is still a row.
COUNT_AWK = (
    'inside { if ($0 == "\\\\.") { print n "\\t" head; inside = 0 } else n++; next } '
    "/^COPY .* FROM stdin;$/ { head = $0; n = 0; inside = 1 }"
)
_IDENT = r'(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
# A table as pg_dump names it: schema-qualified, each part quoted when it has to be.
TABLE_NAME = re.compile(rf"{_IDENT}(?:\.{_IDENT})?")
_COPY_LINE = re.compile(rf"COPY ({TABLE_NAME.pattern}) .*FROM stdin;")


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


def count_command(dump: str = "") -> str:
    """Rows of each table in DUMP (a path) or standard input: lines `<rows>\t<COPY line>`."""
    source = f" {shlex.quote(dump)}" if dump else ""
    return f"set -o pipefail; pg_restore --data-only -f -{source} | awk {shlex.quote(COUNT_AWK)}"


def parse_counts(stdout: str) -> dict[str, int]:
    """{table: rows} from the output of `count_command`; ValueError for a line it does not
    expect (the dump is then not one pg_dump wrote)."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        rows, _, head = line.partition("\t")
        found = _COPY_LINE.fullmatch(head)
        if found is None or not rows.isdigit():
            raise ValueError(f"unexpected line {line[:80]!r}")
        counts[found.group(1)] = counts.get(found.group(1), 0) + int(rows)
    return counts


def quote_ident(name: str) -> str:
    """NAME as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_command(connect: str, statement: str, as_: str = "") -> str:
    """psql running one STATEMENT (never one carrying a secret), stopping at its error."""
    return f"{as_}psql -X -q -v ON_ERROR_STOP=1 --no-password {connect} -c {shlex.quote(statement)}"


def create_database_sql(name: str) -> str:
    """A new, empty database NAME (from template0: nothing of template1 comes along)."""
    return f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"


def drop_database_sql(name: str) -> str:
    """Drop database NAME, ending the sessions still in it (none when it is not there)."""
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"


def count_rows_query(tables: Sequence[str]) -> str:
    """`SELECT i, count(*)` of the I-th of TABLES, in their order; ValueError for a name
    that is not an identifier as pg_dump writes it."""
    bad = [table for table in tables if not TABLE_NAME.fullmatch(table)]
    if bad:
        raise ValueError(f"{bad[0][:80]!r} is not a table name")
    # Each name is an identifier (TABLE_NAME), quoted where it must be: nothing else gets in.
    selects = [f"SELECT {i}, count(*) FROM {table}" for i, table in enumerate(tables)]  # noqa: S608
    return " UNION ALL ".join(selects) + " ORDER BY 1"


def count_rows_command(connect: str, tables: Sequence[str], as_: str = "") -> str:
    """psql printing `i|rows` for each of TABLES (see count_rows_query)."""
    query = shlex.quote(count_rows_query(tables))
    return f"{as_}psql -X -A -t -q -v ON_ERROR_STOP=1 --no-password {connect} -c {query}"


def parse_rows(stdout: str, tables: Sequence[str]) -> dict[str, int]:
    """{table: rows} from the output of `count_rows_command` for TABLES."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        index, _, rows = line.strip().partition("|")
        if index.isdigit() and rows.isdigit() and int(index) < len(tables):
            counts[tables[int(index)]] = int(rows)
    return counts


def differences(expected: Mapping[str, int], found: Mapping[str, int]) -> list[str]:
    """What differs between the row counts EXPECTED and FOUND, one phrase per table."""
    lines = []
    for table in sorted(set(expected) | set(found)):
        if table not in found:
            lines.append(f"{table} is missing")
        elif table not in expected:
            lines.append(f"{table} is not in the manifest")
        elif found[table] != expected[table]:
            lines.append(f"{table} has {found[table]} rows instead of {expected[table]}")
    return lines
