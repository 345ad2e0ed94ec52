"""What backup, restore and verify need of an environment (the local stack, a cluster), and the
small objects their steps share.

A target gives the steps of its own commands: each step's row shows the command line it runs
(or what it does, never a secret), and its `run` runs exactly that. Names a run only chooses
when it gets there (a scratch database, a helper Job and its pod) appear in the rows as a
pattern (`..._verify_XXXXXXXX`, `restore-XXXXXX`), built by the same code as the real name.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from invoke import Exit
from rich.filesize import decimal

from desbordante_ops.backup import postgres
from desbordante_ops.backup.archive import DATABASE, UPLOADS
from desbordante_ops.backup.progress import size_of
from desbordante_ops.backup.schema import SchemaPlan
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Step

SCRATCH_INFIX = "_verify_"
PLANNED_SUFFIX = "XXXXXXXX"  # a scratch database's random suffix, in a plan's rows
DATABASE_NAME_MAX = 63  # PostgreSQL's identifier length


@dataclass(frozen=True)
class Facts:
    """What a backup records about its source: release, image and schema revision."""

    release: str
    image: str
    schema_revision: str | None


@dataclass(frozen=True)
class Staging:
    """A run's own directory for an archive's members, next to the archive (mode 0700)."""

    path: Path

    @classmethod
    def beside(cls, archive_path: Path, purpose: str) -> Staging:
        """`.<archive name>.<purpose>` in the archive's directory."""
        return cls(archive_path.with_name(f".{archive_path.name}.{purpose}"))

    @property
    def database(self) -> Path:
        return self.path / DATABASE

    @property
    def uploads(self) -> Path:
        return self.path / UPLOADS

    def create(self) -> None:
        """A fresh, empty directory (what a killed run of the same kind left goes first)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(mode=0o700)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def reason(error: BaseException) -> str:
    """An error as the middle of a one-line message."""
    if isinstance(error, Exit):
        return str(error.message).rstrip(".")
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}".rstrip(".")


def dumped(path: Path) -> None:
    ok(f"database dumped ({decimal(size_of(path))})")


def packed(path: Path) -> None:
    ok(f"uploaded files packed ({decimal(size_of(path))})")


def dump_counts(stdout: str) -> dict[str, int]:
    """{table: rows} from the output of postgres.count_command; Exit when it is not that."""
    try:
        return postgres.parse_counts(stdout)
    except ValueError as error:
        raise Exit(f"counting the rows of the dump: {error}") from None


def scratch_name(database: str, suffix: str) -> str:
    """`<database>_verify_<suffix>`, cut to PostgreSQL's 63 characters."""
    keep = DATABASE_NAME_MAX - len(SCRATCH_INFIX) - len(suffix)
    return f"{database[:keep]}{SCRATCH_INFIX}{suffix}"


@dataclass
class Scratch:
    """The scratch database of one verification (named when it is created), the tables to
    count in it and the counts found."""

    database: str  # the environment's database, whose name the scratch one starts with
    tables: list[str] = field(default_factory=list)
    name: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def planned(self) -> str:
        """Its name in a plan's rows (the real one has a random suffix)."""
        return scratch_name(self.database, PLANNED_SUFFIX)

    def choose(self) -> str:
        self.name = scratch_name(self.database, secrets.token_hex(len(PLANNED_SUFFIX) // 2))
        return self.name


@dataclass(frozen=True)
class ScratchSteps:
    """A target's steps on a scratch database, by what a failure of them means."""

    create: list[Step]
    restore: list[Step]
    count: list[Step]
    drop: list[Step]


@dataclass(frozen=True)
class RestoreSteps:
    """A target's restore steps, in the order they run, by what a failure leaves."""

    stop: list[Step]  # stop the writers (the names go into `stopped` before each stops)
    database: list[Step]
    files: list[Step]
    migrate: list[Step]
    start: list[Step]  # remove helpers, start the writers again and wait for them


class Target(Protocol):
    """One environment's data, as backup, restore and verify see it."""

    env: str
    database: str  # the database's name (a scratch database's name starts with it)

    def describe(self) -> str:
        """Where the data is, for messages (never a secret)."""

    def facts_step(self, keep: Callable[[Facts], None]) -> list[Step]:
        """The step reading the release and the schema revision; it hands them to KEEP."""

    def backup_steps(self, staging: Staging) -> list[Step]:
        """Dump the database to STAGING.database and pack the files into STAGING.uploads."""

    def count_step(self, dump: Path, keep: Callable[[dict[str, int]], None]) -> list[Step]:
        """Count the rows of each table in the dump at DUMP; hands {table: rows} to KEEP."""

    def restore_steps(
        self, staging: Staging, schema: SchemaPlan, stopped: list[str]
    ) -> RestoreSteps:
        """Replace the data with the members in STAGING; the writers it stops go into STOPPED."""

    def scratch_steps(self, dump: Path, scratch: Scratch) -> ScratchSteps:
        """Create SCRATCH (its name: SCRATCH.choose()), restore the dump at DUMP into it, count
        the rows of SCRATCH.tables into SCRATCH.counts, drop it."""

    def drop_scratch(self, name: str) -> None:
        """Drop the scratch database NAME (nothing when it is not there)."""

    def start_writers(self, names: list[str]) -> None:
        """Start NAMES again (what the stop steps stopped) and wait until they are ready."""

    def close(self) -> None:
        """Remove anything the run created to do its work (helper Jobs); nothing when none."""


@dataclass(frozen=True)
class Unread:
    """An environment whose state could not be read: its plans show why, in the row `why`
    (an `unknown` step: the real run stops there), instead of the target's own steps."""

    env: str
    where: str
    why: Step

    def describe(self) -> str:
        return self.where


Source = Target | Unread
