"""Backup and restore of one environment as plans (core/plan.py): the same steps for the local
stack and a cluster, whose targets (protocol.py) give the commands.

Backup (`backup_plan`): [create the output directory] -> create the staging directory -> read
the release and the schema revision -> dump the database (one consistent snapshot) -> pack the
uploaded files -> count the rows of each table in the dump -> write the archive (archive.py;
the staging directory goes) -> [verify it (scratch.py)]. The dump comes first: a dataset the
dump knows was written before it, so its file is in the files taken after it.

Restore (`restore_plan`): while the plan is built, read the manifest, refuse a schema newer
than the code's head and check every member's checksum (a dry run fails the same way) ->
[ask: the typed environment name, or --yes; without a terminal the real run refuses] -> copy
the members out (checked again) -> stop the writers (api, worker) -> database (one transaction)
-> files -> [migrations when the archive is older] -> start the writers again. A failure says
in one line what state things are in: nothing changed (writers started again), or what was
restored and that running the same restore again finishes it.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from invoke import Exit
from rich.filesize import decimal

from desbordante_ops.backup import archive, schema, scratch
from desbordante_ops.backup.archive import DATABASE, UPLOADS, Manifest
from desbordante_ops.backup.protocol import Facts, Source, Staging, Target, Unread, reason
from desbordante_ops.backup.watch import watch
from desbordante_ops.core.console import ok, step, warn
from desbordante_ops.core.plan import Plan, Step, execute, file_step, refused

BACKUP_STAGING = "staging"


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a directory we may not look into: creating it says why
        return False


@dataclass
class _Backup:
    """What the steps of one backup share."""

    target: Source
    output: Path
    path: Path
    staging: Staging
    created: dt.datetime
    facts: Facts | None = None
    counts: dict[str, int] | None = None

    def keep_facts(self, facts: Facts) -> None:
        self.facts = facts

    def keep_counts(self, counts: dict[str, int]) -> None:
        self.counts = counts
        ok(f"rows counted in the dump: {len(counts)} tables, {sum(counts.values())} rows")

    def write(self) -> None:
        assert self.facts is not None  # the facts step ran before
        manifest = Manifest(
            env=self.target.env,
            source=self.target.describe(),
            release=self.facts.release,
            image=self.facts.image,
            schema_revision=self.facts.schema_revision,
            created_at=self.created.isoformat().replace("+00:00", "Z"),
            row_counts=self.counts,
        )
        members = {DATABASE: self.staging.database, UPLOADS: self.staging.uploads}
        written = archive.write_archive(self.path, manifest, members)
        self.staging.remove()
        archive.show_manifest(f"backup {self.path}", written)
        size = decimal(self.path.stat().st_size)
        ok(f"backup of {self.target.env} written to {self.path} ({size}, mode 0600)")

    def cleanup(self) -> None:
        self.staging.remove()
        if not isinstance(self.target, Unread):
            self.target.close()

    def failed(self, error: BaseException) -> BaseException:
        self.cleanup()
        if isinstance(error, OSError):  # a full disk, a directory we may not write
            where = error.filename or self.output
            return Exit(
                f"Backup failed: {error.strerror or error} ({where}); no archive was written. "
                "Free space there or pass --output DIR."
            )
        return error


def backup_plan(
    target: Source, output: Path, verify_it: bool = False, created: dt.datetime | None = None
) -> Plan:
    """The plan of one archive of TARGET's data in the directory OUTPUT (then VERIFY_IT)."""
    return _backup_plan(target, output, verify_it, created)[0]


def _backup_plan(
    target: Source, output: Path, verify_it: bool, created: dt.datetime | None
) -> tuple[Plan, Path]:
    created = created or archive.utc_now()
    path = output / archive.archive_name(target.env, created)
    run = _Backup(target, output, path, Staging.beside(path, BACKUP_STAGING), created)
    steps: list[Step] = []
    if not _is_dir(output):
        steps.append(
            Step(
                "create",
                f"directory {output} (mode 0700)",
                lambda: output.mkdir(mode=0o700, parents=True, exist_ok=True),
            )
        )
    staging = run.staging.path
    steps.append(
        Step(
            "create",
            f"directory {staging} (mode 0700): the members until the archive is written",
            run.staging.create,
        )
    )
    if isinstance(target, Unread):
        found = [target.why]
    else:
        found = [
            *target.facts_step(run.keep_facts),
            *target.backup_steps(run.staging),
            *target.count_step(run.staging.database, run.keep_counts),
        ]
    what = f"archive of {DATABASE}, {UPLOADS} and {archive.MANIFEST} (no secrets)"
    write = file_step(path, f"{what}; {staging} is removed", run.write)
    steps = watch([*steps, *found, write], run.failed, after=run.cleanup)
    if verify_it:
        steps += scratch.verify_steps(target, path)
    return Plan(f"backup of {target.describe()}", steps), path


def backup(target: Source, output: Path, verify_it: bool = False) -> Path:
    """Write one archive of TARGET's data into the directory OUTPUT; its path."""
    plan, path = _backup_plan(target, output, verify_it, None)
    execute(plan)
    return path


def confirm_restore(env: str, archive_path: Path, ask: Callable[[str], str]) -> None:
    """Go on only when the environment's name is typed."""
    question = (
        f"Replace the database and uploaded files of {env} with {archive_path.name}? "
        f"Type the environment name ({env}) to confirm: "
    )
    try:
        answer = ask(question)
    except EOFError:
        answer = ""
    if answer.strip() != env:
        raise Exit("Not confirmed; nothing was changed.")


def ask_step(env: str, archive_path: Path, ask: Callable[[str], str], interactive: bool) -> Step:
    """The confirmation of a restore; without a terminal, the real run refuses there."""
    action, what = "ask", f"type {env} to confirm (--yes skips it)"
    if not interactive:
        why = f"No terminal to confirm on; nothing was changed. Pass --yes to restore {env}."
        return refused(action, what, why)
    return Step(action, what, lambda: confirm_restore(env, archive_path, ask))


@dataclass
class Progress:
    """What a restore has done so far, to say what state a failure leaves."""

    env: str
    stopped: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    doing: str = ""

    def changed(self) -> bool:
        return "database" in self.done

    def state(self) -> str:
        """What a failure after the database was restored leaves (one sentence)."""
        if "files" not in self.done:
            now = "The database is restored, the uploaded files are not (or only partly)"
        else:
            now = "The database and the uploaded files are restored, the schema is not migrated"
        stopped = f"; {', '.join(self.stopped)} stay stopped" if self.stopped else ""
        return f"{now}{stopped}. Run the same restore again to finish it (it is safe to repeat)"


def _open_archive(target: Source, archive_path: Path) -> tuple[Manifest, schema.SchemaPlan]:
    """The manifest of ARCHIVE_PATH (shown) and its schema plan; Exit for a newer schema."""
    manifest = archive.read_manifest(archive_path)
    plan = schema.plan(manifest.schema_revision)
    archive.show_manifest(f"archive {archive_path}", manifest)
    if manifest.env != target.env:
        warn(f"the archive comes from {manifest.env}; restoring it into {target.env}")
    return manifest, plan


@dataclass
class _Restore:
    """What the steps of one restore share."""

    target: Source
    archive_path: Path
    manifest: Manifest
    staging: Staging
    progress: Progress

    def unpack(self) -> None:
        try:
            self.staging.create()
            archive.extract_verified(self.archive_path, self.manifest, self.staging.path)
        except OSError as exc:
            where = exc.filename or self.staging.path
            raise Exit(
                f"Cannot unpack the archive next to it ({exc.strerror or exc}: {where}); "
                "nothing was changed. Copy it to a directory with room for it."
            ) from None
        ok("members unpacked, checksums match")

    def cleanup(self) -> None:
        if not isinstance(self.target, Unread):
            self.target.close()
        self.staging.remove()

    def failed_before(self, error: BaseException) -> BaseException:
        """Asking or unpacking failed: nothing was changed, the error says so itself."""
        self.cleanup()
        return error

    def failed(self, error: BaseException) -> BaseException:
        assert not isinstance(self.target, Unread)  # its plan stops before any step
        if not isinstance(error, (Exception, KeyboardInterrupt)):
            self.cleanup()
            return error
        message = _failure(self.target, self.progress, error)
        self.cleanup()
        return Exit(message)

    def finished(self) -> None:
        self.cleanup()
        created = self.manifest.created_at
        ok(f"{self.progress.env} restored from {self.archive_path.name} ({created})")


def restore_plan(
    target: Source,
    archive_path: Path,
    yes: bool = False,
    ask: Callable[[str], str] = input,
    interactive: bool | None = None,
) -> Plan:
    """The plan restoring TARGET from ARCHIVE_PATH (see the module docstring). Exit when the
    archive is damaged or from a newer schema."""
    manifest, schema_plan = _open_archive(target, archive_path)
    step("Verifying the archive (sha256 of every member, nothing written)")
    archive.verify(archive_path, manifest)
    ok(f"checksums match; schema {schema_plan.summary}")
    staging = Staging.beside(archive_path, f"restore-{target.env}")
    run = _Restore(target, archive_path, manifest, staging, Progress(target.env))
    interactive = sys.stdin.isatty() if interactive is None else interactive
    first = [] if yes else [ask_step(target.env, archive_path, ask, interactive)]
    unpack = (
        f"the archive's members into {staging.path} (checksums checked again; removed at the end)"
    )
    first.append(Step("unpack", unpack, run.unpack))
    title = f"restore of {target.describe()} from {archive_path.name}"
    if isinstance(target, Unread):
        return Plan(title, [target.why, *first])
    parts = target.restore_steps(staging, schema_plan, run.progress.stopped)
    progress = run.progress
    phases: list[tuple[str, list[Step], str, Callable[[], str]]] = [
        (
            "stopping the writers",
            parts.stop,
            "",
            lambda: f"stopped: {', '.join(progress.stopped) or 'nothing was running'}",
        ),
        ("restoring the database", parts.database, "database", lambda: "database restored"),
        ("restoring the uploaded files", parts.files, "files", lambda: "uploaded files restored"),
        (
            "migrating the schema",
            parts.migrate,
            "migrations",
            lambda: f"schema at {schema_plan.head}",
        ),
        (
            "starting the writers again",
            parts.start,
            "",
            lambda: f"{', '.join(progress.stopped)} running again",
        ),
    ]
    steps = watch(first, run.failed_before)
    for doing, part, done, said in phases:
        steps += watch(
            part,
            run.failed,
            before=_setter(progress, doing),
            after=_marker(progress, done, said),
        )
    return Plan(title, watch(steps, after=run.finished))


def _setter(progress: Progress, doing: str) -> Callable[[], None]:
    def before() -> None:
        progress.doing = doing

    return before


def _marker(progress: Progress, done: str, said: Callable[[], str]) -> Callable[[], None]:
    def after() -> None:
        if done:
            progress.done.append(done)
        ok(said())

    return after


def restore(
    target: Source,
    archive_path: Path,
    yes: bool = False,
    ask: Callable[[str], str] = input,
    interactive: bool | None = None,
) -> None:
    """Restore TARGET from ARCHIVE_PATH (the plan of `restore_plan`, executed)."""
    execute(restore_plan(target, archive_path, yes, ask, interactive))


def _failure(target: Target, progress: Progress, error: BaseException) -> str:
    """The one line a failed restore ends with; starts the writers again if nothing changed."""
    head = f"Restore of {progress.env} failed while {progress.doing}: {reason(error)}."
    if progress.changed():
        if progress.doing == "starting the writers again":
            return f"{head} The data is restored; start {', '.join(progress.stopped)} yourself."
        return f"{head} {progress.state()}."
    if not progress.stopped:
        return f"{head} Nothing was changed."
    try:
        target.start_writers(progress.stopped)
    except (Exception, KeyboardInterrupt) as again:
        return (
            f"{head} Nothing was changed, but {', '.join(progress.stopped)} could not be started "
            f"again ({reason(again)}); start them yourself."
        )
    return f"{head} Nothing was changed; {', '.join(progress.stopped)} run again."
