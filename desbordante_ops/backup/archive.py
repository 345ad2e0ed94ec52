"""The backup archive: one tar with `database.dump`, `uploads.tar` and `manifest.json`.

`database.dump` is `pg_dump -Fc` of the service's database, `uploads.tar` the uploaded files,
`manifest.json` (written last, read first) says where the archive comes from (environment,
release, image, alembic schema revision, time), the sha256 and size of the other members and
the rows of each table the dump holds (`row_counts`, counted in the dump itself right after
pg_dump; absent from archives of older toolkits), which `invoke backup --verify` compares
with a restore of the dump into a scratch database.
The archive is written under a temporary name (mode 0600) and renamed when complete, so a
file with the final name is always whole. Nothing else goes in: never a secret.

Reading copies every member out while hashing it; a member that is missing, unexpected, not a
regular file or of another size or checksum stops the restore before anything is touched.
An archive that failed its verification keeps its data but is renamed `<name>.unverified.tar`.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tarfile
from collections.abc import Collection
from pathlib import Path

from invoke import Exit
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.filesize import decimal

from desbordante_ops.backup.progress import Meter
from desbordante_ops.core.console import print_table, tracker

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "database.dump"
UPLOADS = "uploads.tar"
MEMBERS = (DATABASE, UPLOADS)
SUFFIX = ".tar"
UNVERIFIED = ".unverified"
MANIFEST_MAX_BYTES = 1024 * 1024


class Member(BaseModel):
    """Checksum and size of one member."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    size: int


class Manifest(BaseModel):
    """What an archive holds and where it comes from (manifest.json)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: int = FORMAT
    env: str
    source: str  # e.g. "namespace desbordante-stage on https://..." or "local stack: ..."
    release: str  # image tag (cluster) or git revision (local stack)
    image: str = ""  # image reference and digest the api ran, when known
    schema_revision: str | None  # alembic revision of the database (None: empty database)
    created_at: str  # RFC 3339, UTC
    members: dict[str, Member] = {}
    # Rows of each table in the dump ("public.datasets": 12), counted in the dump's data right
    # after pg_dump. None: an archive of an older toolkit (it cannot be verified).
    row_counts: dict[str, int] | None = None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def archive_name(env: str, created: dt.datetime) -> str:
    """desbordante-<env>-<YYYYmmddTHHMMSSZ>.tar (sorts by time)."""
    return f"desbordante-{env}-{created.strftime('%Y%m%dT%H%M%SZ')}{SUFFIX}"


def unverified_name(path: Path) -> Path:
    """PATH renamed as unverified: `<name>.unverified.tar` (itself when it is already)."""
    if path.name.endswith(UNVERIFIED + SUFFIX):
        return path
    stem = path.name.removesuffix(SUFFIX)
    return path.with_name(f"{stem}{UNVERIFIED}{SUFFIX}")


def verified_name(path: Path) -> Path:
    """The name of PATH without `.unverified` (itself when it has none)."""
    if not path.name.endswith(UNVERIFIED + SUFFIX):
        return path
    return path.with_name(path.name.removesuffix(UNVERIFIED + SUFFIX) + SUFFIX)


def write_archive(target: Path, manifest: Manifest, staged: dict[str, Path]) -> Manifest:
    """Write the archive TARGET from the STAGED member files; returns the manifest with the
    members' checksums (computed while they are copied in)."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    members: dict[str, Member] = {}
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar,
            tracker() as track,
        ):
            for name in MEMBERS:
                path = staged[name]
                size = path.stat().st_size
                with path.open("rb") as source:
                    meter = Meter(source, size, f"archive: {name}", track)
                    tar.addfile(_info(name, size), meter)
                    meter.show()
                members[name] = Member(sha256=meter.sha256, size=size)
            final = manifest.model_copy(update={"members": members})
            data = final.model_dump_json(indent=2).encode() + b"\n"
            tar.addfile(_info(MANIFEST, len(data)), io.BytesIO(data))
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(utc_now().timestamp())
    return info


def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise Exit(f"{path} not found; pass the archive `invoke backup` wrote (--archive PATH).")
    try:
        return tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise Exit(f"{path} is not a backup archive (not a readable tar: {exc}).") from None


def read_manifest(path: Path) -> Manifest:
    """The manifest of the archive at PATH; Exit when it is not a backup of ours."""
    with _open(path) as tar:
        try:
            member = tar.getmember(MANIFEST)
        except KeyError:
            raise Exit(
                f"{path} has no {MANIFEST}; it is not an archive of `invoke backup`."
            ) from None
        handle = tar.extractfile(member) if member.isfile() else None
        if handle is None or member.size > MANIFEST_MAX_BYTES:
            raise Exit(f"{path}: {MANIFEST} is not a small regular file; the archive is damaged.")
        try:
            manifest = Manifest.model_validate_json(handle.read())
        except ValidationError as error:
            raise Exit(f"{path}: {MANIFEST} is not valid ({error.errors()[0]['msg']}).") from None
    if manifest.format != FORMAT:
        raise Exit(
            f"{path} has archive format {manifest.format}; this toolkit reads format {FORMAT}. "
            "Use the toolkit version that wrote it."
        )
    missing = [name for name in MEMBERS if name not in manifest.members]
    if missing:
        raise Exit(f"{path}: the manifest lists no {missing[0]}; the archive is incomplete.")
    return manifest


def verify(path: Path, manifest: Manifest) -> None:
    """Check every member of PATH against MANIFEST (read and hashed, written nowhere)."""
    extract_verified(path, manifest, Path(os.devnull), copy=False)


def extract_verified(
    path: Path,
    manifest: Manifest,
    staging: Path,
    copy: bool = True,
    only: Collection[str] | None = None,
) -> dict[str, Path]:
    """Copy the members of PATH to STAGING (unless not COPY; ONLY: just these), checking each
    against MANIFEST (all of them, copied or not); their paths."""
    found: dict[str, Path] = {}
    with _open(path) as tar, tracker() as track:
        for member in tar:
            if member.name == MANIFEST:
                continue
            expected = manifest.members.get(member.name)
            if expected is None or member.name in found or not member.isfile():
                raise Exit(f"{path}: unexpected member {member.name!r}; the archive is damaged.")
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            kept = copy and (only is None or member.name in only)
            target = staging / member.name if kept else Path(os.devnull)
            with target.open("wb") as out:
                meter = Meter(source, member.size, f"verify: {member.name}", track)
                while chunk := meter.read(1024 * 1024):
                    out.write(chunk)
                meter.show()
            if meter.done != expected.size or meter.sha256 != expected.sha256:
                raise Exit(
                    f"{path}: {member.name} does not match its checksum in the manifest "
                    f"({decimal(meter.done)}, sha256 {meter.sha256[:12]}… instead of "
                    f"{decimal(expected.size)}, {expected.sha256[:12]}…); the archive is damaged, "
                    "use another one."
                )
            found[member.name] = target
    missing = [name for name in manifest.members if name not in found]
    if missing:
        raise Exit(f"{path}: {missing[0]} is missing; the archive is incomplete.")
    return found


def show_manifest(title: str, manifest: Manifest) -> None:
    counts = manifest.row_counts
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
        (
            "row counts",
            "(not recorded: an archive of an older toolkit)"
            if counts is None
            else f"{len(counts)} tables, {sum(counts.values())} rows",
        ),
    ]
    print_table(title, ("what", "value"), rows)
