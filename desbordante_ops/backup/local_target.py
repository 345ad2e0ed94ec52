"""Backup and restore of the local stack (processes under supervisord).

The database is dumped and restored with this machine's PostgreSQL client tools as
POSTGRES_ADMIN_USER, reached the way `invoke up` reaches it (local/pgadmin.py: over TCP when it
logs in without a prompt, else as its OS user on the unix socket with peer authentication;
never a password on a command line); restored objects belong to POSTGRES_USER.
The uploads directory is read and written directly. Writers are supervisord's api and worker:
stopped (bounded by their stopwaitsecs) for a restore and started again afterwards, if they ran.
A verification's scratch database is created, restored into, counted and dropped by the same
administrator, on the same server, next to the stack's database (which it never touches).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from invoke import Context, Exit, Result

import desbordante_service
from desbordante_ops.backup import postgres, uploads
from desbordante_ops.backup.progress import run_watched
from desbordante_ops.backup.protocol import (
    Facts,
    RestoreSteps,
    Scratch,
    ScratchSteps,
    Staging,
    dump_counts,
    dumped,
    packed,
)
from desbordante_ops.backup.schema import SCHEMA_AT_HEAD, SchemaPlan
from desbordante_ops.core.plan import Step, note
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt, last_line
from desbordante_ops.image.tags import revision
from desbordante_ops.local.environ import existing_env, run_service_command
from desbordante_ops.local.health import Health
from desbordante_ops.local.machine import privilege
from desbordante_ops.local.pgadmin import PsqlAdmin, open_admin
from desbordante_ops.local.processes import ProcessStack

WRITERS = ("api", "worker")
ACTIVE = ("RUNNING", "STARTING", "BACKOFF")
DUMP_TIMEOUT_SECONDS = 3600
RESTORE_TIMEOUT_SECONDS = 3600
COUNT_TIMEOUT_SECONDS = 3600
SQL_TIMEOUT_SECONDS = 120
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
        self.database = cfg.backend.POSTGRES_DB or ""
        self._socket = socket
        self._found: tuple[str, str | None] | None = None

    def _admin(self) -> tuple[str, str | None]:
        """(prefix, host) of the admin's client commands (found once): a prefix running them
        as the admin's OS user and no host (the unix socket), or no prefix and TCP."""
        if self._found is None:
            if self._socket is None:
                with open_admin(self.c, self.cfg) as admin:
                    self._socket = isinstance(admin, PsqlAdmin)
            admin_user = self.cfg.toolkit.POSTGRES_ADMIN_USER
            if self._socket:
                prefix = shlex.join(privilege(self.c).as_user(admin_user, [])) + " "
                self._found = (prefix, None)
            else:
                self._found = ("", self.cfg.backend.POSTGRES_HOST)
        return self._found

    def reach(self) -> None:
        """Find how the admin reaches PostgreSQL (Exit with why it cannot)."""
        self._admin()

    def _connect(self, dbname: str) -> str:
        """The admin's connection options to the database DBNAME."""
        _, host = self._admin()
        backend, admin_user = self.cfg.backend, self.cfg.toolkit.POSTGRES_ADMIN_USER
        return postgres.connect_options(host, backend.POSTGRES_PORT, admin_user, dbname)

    def _route(self) -> tuple[str, str]:
        """(prefix, connection options) of the admin's commands on the stack's database."""
        return self._admin()[0], self._connect(self.database)

    def describe(self) -> str:
        backend = self.cfg.backend
        return (
            f"the local stack (database {backend.POSTGRES_DB} on {backend.POSTGRES_HOST}:"
            f"{backend.POSTGRES_PORT}, uploads in {self.cfg.uploads_dir})"
        )

    @staticmethod
    def _check(result: Result, what: str, detail: str = "") -> None:
        """Exit("WHAT: <its last line>DETAIL") unless RESULT is a success."""
        if result.exited == MISSING_PROGRAM:
            raise Exit(
                f"{what}: the PostgreSQL client tools are missing; "
                "install them (apt-get install postgresql-client)."
            )
        if not result.ok:
            raise Exit(f"{what}: {last_line(result)}{detail}")

    def _sql(self, command: str, what: str) -> Result:
        result = attempt(self.c, command, timeout=SQL_TIMEOUT_SECONDS)
        self._check(result, what)
        return result

    # --- backup ---------------------------------------------------------------------------

    def release(self) -> tuple[str, str]:
        """The git revision of this checkout (what the processes run)."""
        try:
            return revision(self.c, self.cfg.root).tags[0], ""
        except Exit:  # not a git checkout: the backend's own version
            return f"desbordante-service {desbordante_service.__version__}", ""

    def _revision(self, command: str) -> str | None:
        result = attempt(self.c, command, timeout=60)
        found, error = postgres.parse_revision(result.ok, result.stdout, result.stderr)
        if error:
            if result.exited == MISSING_PROGRAM:
                self._check(result, "psql")
            raise Exit(f"psql: {error}")
        return found

    def schema_revision(self) -> str | None:
        prefix, connect = self._route()
        return self._revision(postgres.revision_command(connect, prefix))

    def facts_step(self, keep: Callable[[Facts], None]) -> list[Step]:
        prefix, connect = self._route()
        command = postgres.revision_command(connect, prefix)

        def run() -> None:
            release, image = self.release()
            keep(Facts(release, image, self._revision(command)))

        return [
            Step("read", f"the checkout's git revision and the schema revision: {command}", run)
        ]

    def backup_steps(self, staging: Staging) -> list[Step]:
        prefix, connect = self._route()
        dump = staging.database
        command = f"{postgres.dump_command(connect, prefix)} > {shlex.quote(str(dump))}"

        def dump_database() -> None:
            result = run_watched(self.c, command, "database dump", DUMP_TIMEOUT_SECONDS, dump)
            self._check(result, "pg_dump")
            dumped(dump)

        def pack() -> None:
            uploads.pack(self.cfg.uploads_dir, staging.uploads)
            packed(staging.uploads)

        files = f"uploaded files in {uploads.describe(self.cfg.uploads_dir)} into {staging.uploads}"
        return [Step("run", command, dump_database), Step("pack", files, pack)]

    def count_step(self, dump: Path, keep: Callable[[dict[str, int]], None]) -> list[Step]:
        command = postgres.count_command(str(dump))

        def run() -> None:
            result = run_watched(self.c, command, "counting rows", COUNT_TIMEOUT_SECONDS)
            self._check(result, "counting the rows of the dump (pg_restore --data-only)")
            keep(dump_counts(result.stdout))

        return [Step("run", command, run)]

    # --- restore --------------------------------------------------------------------------

    def _running_writers(self) -> list[str]:
        if not self.stack.is_running():
            return []
        infos = self.stack.sup.processes()
        return [name for name in WRITERS if infos[name]["statename"] in ACTIVE]

    def _restore(self, command: str) -> None:
        result = run_watched(self.c, command, "database restore", RESTORE_TIMEOUT_SECONDS)
        self._check(result, "pg_restore | psql", " (rolled back: the database is unchanged)")

    def restore_steps(
        self, staging: Staging, schema: SchemaPlan, stopped: list[str]
    ) -> RestoreSteps:
        prefix, connect = self._route()
        role = self.cfg.value("POSTGRES_USER")
        restore = postgres.restore_command(connect, role, str(staging.database), prefix)
        running = self._running_writers()
        root = self.cfg.uploads_dir

        def stopper(name: str) -> Callable[[], None]:
            def stop() -> None:
                stopped.append(name)
                self.stack.sup.stop(name)

            return stop

        def starter(name: str) -> Callable[[], None]:
            return lambda: self.stack.sup.start(name)

        start = [Step("start", f"supervisord program {name}", starter(name)) for name in running]
        if running:
            until = f"until {', '.join(running)} are ready ({START_TIMEOUT_SECONDS} s at most)"
            start.append(Step("wait", until, lambda: self._wait_ready(running)))
        migrate = Step("run", f"desbordante-service migrate ({schema.migration})", self.migrate)
        return RestoreSteps(
            stop=[Step("stop", f"supervisord program {name}", stopper(name)) for name in running]
            or [note("skip", "stopping writers: api and worker do not run")],
            database=[Step("run", restore, lambda: self._restore(restore))],
            files=[
                Step(
                    "replace",
                    f"uploaded files in {uploads.describe(root)} by {staging.uploads}",
                    lambda: uploads.unpack(staging.uploads, root),
                )
            ],
            migrate=[migrate] if schema.migrate else [SCHEMA_AT_HEAD],
            start=start,
        )

    def migrate(self) -> None:
        done, output = run_service_command(
            self.c, existing_env(self.cfg), "migrate", timeout=MIGRATE_TIMEOUT_SECONDS
        )
        if not done:
            raise Exit(f"migrate failed: {output[-1] if output else 'no output'}")

    def _wait_ready(self, names: list[str]) -> None:
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

    def start_writers(self, names: list[str]) -> None:
        for name in names:
            self.stack.sup.start(name)
        self._wait_ready(names)

    def close(self) -> None:
        """Nothing to clean up locally."""

    # --- verification ---------------------------------------------------------------------

    def _scratch_sql(self, statement: str) -> str:
        """STATEMENT run by the admin in the maintenance database (never the stack's)."""
        prefix = self._admin()[0]
        return postgres.sql_command(
            self._connect(self.cfg.toolkit.POSTGRES_ADMIN_DB), statement, prefix
        )

    def drop_scratch(self, name: str) -> None:
        self._sql(
            self._scratch_sql(postgres.drop_database_sql(name)), "dropping the scratch database"
        )

    def scratch_steps(self, dump: Path, scratch: Scratch) -> ScratchSteps:
        prefix = self._admin()[0]

        def create(name: str) -> str:
            return self._scratch_sql(postgres.create_database_sql(name))

        def restore(name: str) -> str:
            return postgres.restore_command(self._connect(name), dump=str(dump), as_=prefix)

        def run_create() -> None:
            self._sql(create(scratch.choose()), "creating the scratch database")

        def run_restore() -> None:
            result = run_watched(
                self.c,
                restore(scratch.name),
                "restore into the scratch database",
                RESTORE_TIMEOUT_SECONDS,
            )
            self._check(result, "pg_restore | psql")

        def run_count() -> None:
            tables = scratch.tables
            if tables:
                command = postgres.count_rows_command(self._connect(scratch.name), tables, prefix)
                result = self._sql(command, "psql")
                scratch.counts = postgres.parse_rows(result.stdout, tables)

        counted = (
            f"the rows of each table the manifest counted, in {scratch.planned} "
            f"({prefix}psql, SELECT count(*) of each)"
        )
        return ScratchSteps(
            create=[Step("run", create(scratch.planned), run_create)],
            restore=[Step("run", restore(scratch.planned), run_restore)],
            count=[Step("count", counted, run_count)],
            drop=[
                Step(
                    "run",
                    self._scratch_sql(postgres.drop_database_sql(scratch.planned)),
                    lambda: self.drop_scratch(scratch.name),
                )
            ],
        )
