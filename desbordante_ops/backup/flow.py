"""Backup and restore of one environment, the same steps for the local stack and a cluster.

Backup: release and schema revision -> database dump (one consistent snapshot) -> uploaded
files -> one archive (archive.py). The dump comes first: a dataset the dump knows was written
before it, so its file is in the files taken after it.

Restore: read the manifest -> refuse a schema newer than the code's head -> copy the members
out and verify their checksums -> ask (typed environment name, or --yes; no terminal: refuse)
-> stop the writers (api, worker) -> database (one transaction) -> files -> migrations when the
archive is older -> start the writers again. A failure says in one line what state things are
in: nothing changed (writers started again), or what was restored and that running the same
restore again finishes it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from invoke import Exit
from rich.filesize import decimal

from desbordante_ops.backup import archive, schema
from desbordante_ops.backup.archive import DATABASE, UPLOADS, Manifest
from desbordante_ops.core.console import ok, print_table, step, warn


class Target(Protocol):
    """One environment's data, as backup and restore see it."""

    env: str

    def describe(self) -> str:
        """Where the data is, for messages (never a secret)."""

    def release(self) -> tuple[str, str]:
        """(release tag or revision, image reference and digest or "") of what runs."""

    def schema_revision(self) -> str | None:
        """The database's alembic revision (None: an empty database)."""

    def dump_database(self, path: Path) -> None:
        """Write `pg_dump -Fc` of the database to PATH."""

    def dump_files(self, path: Path) -> None:
        """Write the tar of the uploaded files to PATH."""

    def stop_writers(self, stopped: list[str]) -> None:
        """Stop what writes data (api, worker) and wait; each name goes into STOPPED before
        it is stopped (a failure half-way still says what to start again)."""

    def restore_database(self, path: Path) -> None:
        """Replace the database with the dump at PATH (one transaction)."""

    def restore_files(self, path: Path) -> None:
        """Replace the uploaded files with the tar at PATH."""

    def migrate(self) -> None:
        """Upgrade the restored schema to the code's head."""

    def start_writers(self, names: list[str]) -> None:
        """Start NAMES again (what stop_writers stopped) and wait until they are ready."""

    def close(self) -> None:
        """Remove anything the restore created to do its work (helper pods)."""


def backup(target: Target, output: Path) -> Path:
    """Write one archive of TARGET's data into the directory OUTPUT; its path."""
    try:
        return _backup(target, output)
    except OSError as exc:  # a full disk, a directory we may not write
        where = exc.filename or output
        raise Exit(
            f"Backup failed: {exc.strerror or exc} ({where}); no archive was written. "
            "Free space there or pass --output DIR."
        ) from None


def _backup(target: Target, output: Path) -> Path:
    step(f"Backing up {target.describe()}")
    release, image = target.release()
    revision = target.schema_revision()
    created = archive.utc_now()
    output.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = output / archive.archive_name(target.env, created)
    with tempfile.TemporaryDirectory(dir=output, prefix=".backup-") as tmp:
        staged = {DATABASE: Path(tmp) / DATABASE, UPLOADS: Path(tmp) / UPLOADS}
        try:
            target.dump_database(staged[DATABASE])
            ok(f"database dumped ({decimal(staged[DATABASE].stat().st_size)})")
            target.dump_files(staged[UPLOADS])
            ok(f"uploaded files packed ({decimal(staged[UPLOADS].stat().st_size)})")
        finally:
            target.close()
        manifest = Manifest(
            env=target.env,
            source=target.describe(),
            release=release,
            image=image,
            schema_revision=revision,
            created_at=created.isoformat().replace("+00:00", "Z"),
        )
        manifest = archive.write_archive(path, manifest, staged)
    show_manifest(f"backup {path}", manifest)
    ok(f"backup of {target.env} written to {path} ({decimal(path.stat().st_size)}, mode 0600)")
    return path


def show_manifest(title: str, manifest: Manifest) -> None:
    rows = [
        ("environment", manifest.env),
        ("source", manifest.source),
        ("release", manifest.release + (f" ({manifest.image})" if manifest.image else "")),
        ("schema revision", manifest.schema_revision or "(empty database)"),
        ("created at", manifest.created_at),
        *(
            (name, f"{decimal(member.size)}, sha256 {member.sha256[:16]}…")
            for name, member in manifest.members.items()
        ),
    ]
    print_table(title, ("what", "value"), rows)


def confirm_restore(
    env: str, archive_path: Path, yes: bool, ask: Callable[[str], str], interactive: bool
) -> None:
    """Go on only with --yes or the environment's name typed on a terminal."""
    if yes:
        return
    if not interactive:
        raise Exit(f"No terminal to confirm on; nothing was changed. Pass --yes to restore {env}.")
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


def restore(
    target: Target,
    archive_path: Path,
    yes: bool = False,
    ask: Callable[[str], str] = input,
    interactive: bool | None = None,
) -> Manifest:
    """Restore TARGET from ARCHIVE_PATH (see the module docstring); the archive's manifest."""
    manifest = archive.read_manifest(archive_path)
    plan = schema.plan(manifest.schema_revision)
    show_manifest(f"archive {archive_path}", manifest)
    if manifest.env != target.env:
        warn(f"the archive comes from {manifest.env}; restoring it into {target.env}")
    with _staging(archive_path.parent) as tmp:
        step("Verifying the archive (sha256 of every member)")
        members = archive.extract_verified(archive_path, manifest, tmp)
        ok(f"checksums match; schema {plan.summary}")
        interactive = sys.stdin.isatty() if interactive is None else interactive
        confirm_restore(target.env, archive_path, yes, ask, interactive)
        progress = Progress(target.env)
        try:
            _apply(target, members, plan, progress)
        except (Exception, KeyboardInterrupt) as error:
            raise Exit(_failure(target, progress, error)) from None
        finally:
            target.close()
    ok(f"{target.env} restored from {archive_path.name} ({manifest.created_at})")
    return manifest


@contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A temporary directory next to the archive for its members (removed afterwards)."""
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".restore-") as tmp:
            yield Path(tmp)
    except OSError as exc:
        where = exc.filename or directory
        raise Exit(
            f"Cannot unpack the archive next to it ({exc.strerror or exc}: {where}); nothing "
            "was changed. Copy it to a directory with room for it."
        ) from None


def _apply(
    target: Target, members: dict[str, Path], plan: schema.SchemaPlan, progress: Progress
) -> None:
    progress.doing = "stopping the writers"
    step(f"Stopping the writers of {target.describe()}")
    target.stop_writers(progress.stopped)
    ok(f"stopped: {', '.join(progress.stopped) or 'nothing was running'}")
    progress.doing = "restoring the database"
    step("Restoring the database (one transaction)")
    target.restore_database(members[DATABASE])
    progress.done.append("database")
    ok("database restored")
    progress.doing = "restoring the uploaded files"
    step("Restoring the uploaded files")
    target.restore_files(members[UPLOADS])
    progress.done.append("files")
    ok("uploaded files restored")
    if plan.migrate:
        progress.doing = "migrating the schema"
        step(f"Migrating the schema from {plan.revision or 'an empty database'} to {plan.head}")
        target.migrate()
        ok(f"schema at {plan.head}")
    progress.done.append("migrations")
    if progress.stopped:
        progress.doing = "starting the writers again"
        step(f"Starting {', '.join(progress.stopped)} again")
        target.start_writers(progress.stopped)
        ok(f"{', '.join(progress.stopped)} running again")


def _reason(error: BaseException) -> str:
    if isinstance(error, Exit):
        return str(error.message).rstrip(".")
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}".rstrip(".")


def _failure(target: Target, progress: Progress, error: BaseException) -> str:
    """The one line a failed restore ends with; starts the writers again if nothing changed."""
    head = f"Restore of {progress.env} failed while {progress.doing}: {_reason(error)}."
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
            f"again ({_reason(again)}); start them yourself."
        )
    return f"{head} Nothing was changed; {', '.join(progress.stopped)} run again."
