"""Verification of an archive (`invoke backup --verify [ARCHIVE]`): its dump restored into a
scratch database, and the rows of every table there compared with the counts the manifest
recorded at dump time.

Steps: copy the dump out of the archive (every member's checksum checked) -> create the scratch
database (`<database>_verify_<random>`, on this machine's PostgreSQL as POSTGRES_ADMIN_USER, or
in the postgres pod as its own user) -> restore the dump into it (the restore's own pipeline,
one transaction) -> count the rows of each table of the manifest -> drop the scratch database
-> compare. The scratch database is dropped whatever happens, and the environment's database
is never touched. When the archive fails (a damaged member, a dump that does not restore, a
count that differs), it is kept but renamed `<name>.unverified.tar`, and the one line says so;
a later verification that passes gives it its name back. An archive without row counts (of an
older toolkit) cannot be verified: the plan is refused while it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from invoke import Exit

from desbordante_ops.backup import archive, postgres
from desbordante_ops.backup.archive import DATABASE, Manifest
from desbordante_ops.backup.protocol import Scratch, Source, Staging, Unread, reason
from desbordante_ops.backup.watch import watch
from desbordante_ops.core.console import ok, step
from desbordante_ops.core.plan import Plan, Step

VERIFY_STAGING = "verify"


def counted_tables(path: Path, manifest: Manifest) -> list[str]:
    """The tables whose rows MANIFEST counted; Exit when it counted none (an older archive)
    or names something that is not a table."""
    if manifest.row_counts is None:
        raise Exit(
            f"{path.name} records no row counts (an archive of an older toolkit), so its restore "
            "cannot be compared with them; take a new backup (`invoke backup --verify`)."
        )
    tables = list(manifest.row_counts)
    try:
        postgres.count_rows_query(tables)
    except ValueError as error:
        raise Exit(
            f"{path}: the manifest's row counts name {error}; the archive is damaged."
        ) from None
    return tables


class _Check:
    """What the steps of one verification share."""

    def __init__(self, target: Source, path: Path, manifest: Manifest | None) -> None:
        self.target = target
        self.path = path
        self.manifest = manifest
        self.staging = Staging.beside(path, VERIFY_STAGING)
        self.scratch = Scratch(target.database if not isinstance(target, Unread) else "")
        if manifest is not None:
            self.scratch.tables = counted_tables(path, manifest)

    def unpack(self) -> None:
        """The dump out of the archive (every member checked); the manifest read when the
        archive was only written by an earlier step."""
        if self.manifest is None:
            self.manifest = archive.read_manifest(self.path)
            self.scratch.tables = counted_tables(self.path, self.manifest)
        self.staging.create()
        archive.extract_verified(self.path, self.manifest, self.staging.path, only=[DATABASE])
        ok("dump copied out, checksums match")

    def compare(self) -> None:
        assert self.manifest is not None and self.manifest.row_counts is not None
        expected = self.manifest.row_counts
        differ = postgres.differences(expected, self.scratch.counts)
        if differ:
            more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
            raise Exit(f"the row counts differ from the manifest's: {differ[0]}{more}")

    def _drop(self) -> str:
        """Drop the scratch database if one was made; "" or the sentence saying it is left."""
        name = self.scratch.name
        if not name or isinstance(self.target, Unread):
            return ""
        try:
            self.target.drop_scratch(name)
        except (Exception, KeyboardInterrupt) as error:
            return (
                f" The scratch database {name} could not be dropped ({reason(error)}); "
                "drop it yourself."
            )
        self.scratch.name = ""
        return ""

    def created(self) -> None:
        ok(f"scratch database {self.scratch.name} created")

    def counted(self) -> None:
        counts = self.scratch.counts
        ok(f"counted {sum(counts.values())} rows in {len(counts)} tables of {self.scratch.name}")

    def dropped(self) -> None:
        """After the drop step: the scratch database is gone."""
        ok(f"scratch database {self.scratch.name} dropped")
        self.scratch.name = ""

    def failed(self, doing: str, blame: bool) -> Callable[[BaseException], BaseException]:
        """The `failed` of the steps that were DOING. BLAME: their refusal (an Exit) is the
        archive's; other errors there (a full disk, an interrupt) are not."""

        def handle(error: BaseException) -> BaseException:
            left = self._drop()
            self.staging.remove()
            if not isinstance(error, (Exception, KeyboardInterrupt)):
                return error
            head = f"Verification of {self.path.name} failed while {doing}: {reason(error)}."
            if blame and isinstance(error, Exit):
                tail = self._unverified()
            else:
                tail = (
                    f" The archive was not verified (its name is unchanged); run `invoke backup "
                    f"--verify {self.path}` again once that is fixed."
                )
            return Exit(f"{head}{left}{tail}")

        return handle

    def _unverified(self) -> str:
        renamed = archive.unverified_name(self.path)
        if renamed != self.path:
            if renamed.exists():
                return (
                    f" The archive is kept as {self.path.name} ({renamed.name} exists already); "
                    "do not rely on it: take a new backup."
                )
            self.path.rename(renamed)
        return f" The archive is kept as {renamed.name}; do not rely on it: take a new backup."

    def finished(self) -> None:
        self.staging.remove()
        counts = self.scratch.counts
        ok(
            f"{self.path.name} verified: its dump restores, and its {len(counts)} tables hold "
            f"the {sum(counts.values())} rows counted at dump time"
        )
        named = archive.verified_name(self.path)
        if named != self.path and not named.exists():
            self.path.rename(named)
            ok(f"renamed to {named.name} (it was marked unverified)")


def verify_steps(target: Source, path: Path, manifest: Manifest | None = None) -> list[Step]:
    """The steps verifying the archive at PATH. MANIFEST: read already (None: the archive is
    written by an earlier step of the same plan; its first step reads it)."""
    check = _Check(target, path, manifest)
    unverified = archive.unverified_name(path).name
    unpack = Step(
        "unpack",
        f"{DATABASE} of {path} into {check.staging.path} (the checksums of all members checked;"
        " removed at the end)",
        check.unpack,
    )
    if isinstance(target, Unread):
        return [unpack]
    parts = target.scratch_steps(check.staging.database, check.scratch)
    compare = Step(
        "compare",
        f"the row counts of {check.scratch.planned} with the manifest's (a difference, or a dump"
        f" that does not restore, renames the archive to {unverified})",
        check.compare,
    )
    steps = [
        *watch([unpack], check.failed("copying the dump out of the archive", True)),
        *watch(
            parts.create, check.failed("creating the scratch database", False), after=check.created
        ),
        *watch(parts.restore, check.failed("restoring the dump into the scratch database", True)),
        *watch(
            parts.count,
            check.failed("counting the rows in the scratch database", True),
            after=check.counted,
        ),
        *watch(
            parts.drop,
            check.failed("dropping the scratch database", False),
            after=check.dropped,
        ),
        *watch([compare], check.failed("comparing the row counts", True)),
    ]
    return watch(steps, after=check.finished)


def verify_plan(target: Source, path: Path) -> Plan:
    """`backup --verify ARCHIVE`: the plan verifying an existing archive. Its manifest and
    checksums are read while the plan is built: Exit when it is damaged or has no counts."""
    manifest = archive.read_manifest(path)
    archive.show_manifest(f"archive {path}", manifest)
    counted_tables(path, manifest)
    step("Verifying the archive (sha256 of every member, nothing written)")
    archive.verify(path, manifest)
    ok("checksums match")
    steps = verify_steps(target, path, manifest)
    if isinstance(target, Unread):
        steps = [target.why, *steps]
    return Plan(f"verification of {path.name} on {target.describe()}", steps)
