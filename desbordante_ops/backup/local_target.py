"""Backup and restore of the local stack (processes under supervisord).

The database is dumped and restored with this machine's PostgreSQL client tools as
POSTGRES_ADMIN_USER, reached the way `invoke up` reaches it (local/pgadmin.py: over TCP when it
logs in without a prompt, else as its OS user on the unix socket with peer authentication;
never a password on a command line); restored objects belong to POSTGRES_USER.
The uploads directory is read and written directly. Writers are supervisord's api and worker:
stopped (bounded by their stopwaitsecs) for a restore and started again afterwards, if they ran.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from invoke import Context, Exit

import desbordante_service
from desbordante_ops.backup import postgres, uploads
from desbordante_ops.backup.archive import DATABASE, UPLOADS
from desbordante_ops.backup.progress import last_line, run_watched
from desbordante_ops.backup.schema import SCHEMA_AT_HEAD
from desbordante_ops.core.plan import Row, read_or_row
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.tags import revision
from desbordante_ops.local.environ import existing_env, run_service_command
from desbordante_ops.local.health import Health
from desbordante_ops.local.host import privilege
from desbordante_ops.local.pgadmin import PsqlAdmin, open_admin
from desbordante_ops.local.processes import ProcessStack

WRITERS = ("api", "worker")
ACTIVE = ("RUNNING", "STARTING", "BACKOFF")
DUMP_TIMEOUT_SECONDS = 3600
RESTORE_TIMEOUT_SECONDS = 3600
MIGRATE_TIMEOUT_SECONDS = 300
START_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.5
MISSING_PROGRAM = 127


class LocalTarget:
    """The local stack's database, uploads directory and writers."""

    env = "local"

    def __init__(self, c: Context, cfg: EnvConfig, socket: bool | None = None) -> None:
        """SOCKET: use the unix-socket route (True), TCP (False), or find out (None)."""
        self.c = c
        self.cfg = cfg
        self.stack = ProcessStack(c, cfg)
        self._socket = socket
        self._found: tuple[str, str] | None = None

    def _route(self) -> tuple[str, str]:
        """(prefix, connection options) of the admin's client commands (found once)."""
        if self._found is None:
            self._found = self._find_route()
        return self._found

    def _find_route(self) -> tuple[str, str]:
        if self._socket is None:
            with open_admin(self.c, self.cfg) as admin:
                self._socket = isinstance(admin, PsqlAdmin)
        backend, admin_user = self.cfg.backend, self.cfg.toolkit.POSTGRES_ADMIN_USER
        assert backend.POSTGRES_DB  # EnvConfig requires it
        host = None if self._socket else backend.POSTGRES_HOST
        prefix = shlex.join(privilege(self.c).as_user(admin_user, [])) + " " if self._socket else ""
        connect = postgres.connect_options(
            host, backend.POSTGRES_PORT, admin_user, backend.POSTGRES_DB
        )
        return prefix, connect

    def describe(self) -> str:
        backend = self.cfg.backend
        return (
            f"the local stack (database {backend.POSTGRES_DB} on {backend.POSTGRES_HOST}:"
            f"{backend.POSTGRES_PORT}, uploads in {self.cfg.uploads_dir})"
        )

    def _run(self, command: str, what: str, timeout: float) -> str:
        result = self.c.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        self._check(result.exited, result.ok, last_line(result), what)
        return str(result.stdout)

    @staticmethod
    def _check(exited: int, ok: bool, message: str, what: str) -> None:
        if exited == MISSING_PROGRAM:
            raise Exit(
                f"{what}: the PostgreSQL client tools are missing; "
                "install them (apt-get install postgresql-client)."
            )
        if not ok:
            raise Exit(f"{what}: {message}")

    def release(self) -> tuple[str, str]:
        """The git revision of this checkout (what the processes run)."""
        try:
            return revision(self.c, self.cfg.root).tags[0], ""
        except Exit:  # not a git checkout: the backend's own version
            return f"desbordante-service {desbordante_service.__version__}", ""

    def schema_revision(self) -> str | None:
        prefix, connect = self._route()
        result = self.c.run(
            postgres.revision_command(connect, prefix),
            hide=True,
            warn=True,
            in_stream=False,
            timeout=60,
        )
        found, error = postgres.parse_revision(result.ok, result.stdout, result.stderr)
        if error:
            self._check(result.exited, False, error, "psql")
        return found

    def dump_database(self, path: Path) -> None:
        prefix, connect = self._route()
        command = f"{postgres.dump_command(connect, prefix)} > {shlex.quote(str(path))}"
        result = run_watched(self.c, command, "database dump", DUMP_TIMEOUT_SECONDS, watch=path)
        self._check(result.exited, result.ok, last_line(result), "pg_dump")

    def dump_files(self, path: Path) -> None:
        uploads.pack(self.cfg.uploads_dir, path)

    def _running_writers(self) -> list[str]:
        if not self.stack.is_running():
            return []
        infos = self.stack.sup.processes()
        return [name for name in WRITERS if infos[name]["statename"] in ACTIVE]

    def stop_writers(self, stopped: list[str]) -> None:
        for name in self._running_writers():
            stopped.append(name)
            self.stack.sup.stop(name)

    def restore_database(self, path: Path) -> None:
        prefix, connect = self._route()
        command = postgres.restore_command(
            connect, role=self.cfg.value("POSTGRES_USER"), dump=str(path), as_=prefix
        )
        result = run_watched(self.c, command, "database restore", RESTORE_TIMEOUT_SECONDS)
        self._check(
            result.exited,
            result.ok,
            f"{last_line(result)} (rolled back: the database is unchanged)",
            "pg_restore | psql",
        )

    def restore_files(self, path: Path) -> None:
        uploads.unpack(path, self.cfg.uploads_dir)

    def migrate(self) -> None:
        done, output = run_service_command(
            self.c, existing_env(self.cfg), "migrate", timeout=MIGRATE_TIMEOUT_SECONDS
        )
        if not done:
            raise Exit(f"migrate failed: {output[-1] if output else 'no output'}")

    def start_writers(self, names: list[str]) -> None:
        for name in names:
            self.stack.sup.start(name)

        def health() -> dict[str, Health]:
            return {name: self.stack.health(name) for name in names}

        states = poll(
            health,
            lambda now: all(h.ready or h.failed for h in now.values()),
            START_TIMEOUT_SECONDS,
            POLL_SECONDS,
        )
        bad = [f"{name}: {h.detail}" for name, h in states.items() if not h.ready]
        if bad:
            raise Exit(f"not ready: {'; '.join(bad)} (`invoke logs` shows why)")

    def close(self) -> None:
        """Nothing to clean up locally."""

    # --- dry runs -------------------------------------------------------------------------

    def _database(self, command: Callable[[str, str], str], what: str) -> Row:
        """("run", COMMAND(prefix, connect)) on the admin's route, or why it is unknown."""
        route, rows = read_or_row(self._route, f"{what} of {self.cfg.backend.POSTGRES_DB}")
        return rows[0] if route is None else ("run", command(*route))

    def plan_backup(self, staging: Path) -> list[Row]:
        dump = staging / DATABASE
        return [
            self._database(
                lambda prefix, connect: f"{postgres.dump_command(connect, prefix)} > {dump}",
                "pg_dump",
            ),
            ("pack", f"uploaded files in {uploads.describe(self.cfg.uploads_dir)}"),
        ]

    def plan_restore(self, staging: Path, migrate: str) -> list[Row]:
        role = self.cfg.value("POSTGRES_USER")
        dump = str(staging / DATABASE)
        running = self._running_writers()
        stop = [("stop", f"supervisord program {name}") for name in running] or [
            ("skip", "stopping writers: api and worker do not run")
        ]
        return [
            *stop,
            self._database(
                lambda prefix, connect: postgres.restore_command(connect, role, dump, prefix),
                "pg_restore | psql",
            ),
            ("replace", f"uploaded files in {uploads.describe(self.cfg.uploads_dir)} by {UPLOADS}"),
            ("run", f"desbordante-service migrate ({migrate})") if migrate else SCHEMA_AT_HEAD,
            *(("start", f"supervisord program {name} (and wait until ready)") for name in running),
        ]
