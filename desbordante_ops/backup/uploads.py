"""The uploads directory as a tar (`uploads.tar` of an archive), and back.

Everything under the directory goes in except `incoming/` (uploads in progress: part files and
their leases, useless without the request that writes them) and `.restore/` (a restore's
staging area). Cluster pods do the same with GNU tar (`TAR_EXCLUDES`), so an archive of any
environment restores into any other.

Restoring unpacks into `.restore/` first (same filesystem), then replaces the old entries with
the new ones by renames: the window in which the directory is half old, half new is short,
and running it again finishes the job.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

from rich.filesize import decimal

from desbordante_ops.core.console import tracker

EXCLUDED = ("incoming", ".restore")
STAGING = ".restore"
TAR_EXCLUDES = tuple(f"--exclude=./{name}" for name in EXCLUDED)


def _entries(root: Path) -> Iterator[Path]:
    """Every file and directory below ROOT except the excluded top-level ones, sorted."""
    for top in sorted(root.iterdir()):
        if top.name in EXCLUDED:
            continue
        yield top
        if top.is_dir() and not top.is_symlink():
            yield from sorted(top.rglob("*"))


def inventory(root: Path) -> tuple[int, int]:
    """(files, bytes) `pack` would take from ROOT now (read only; a missing ROOT is empty)."""
    if not root.is_dir():
        return 0, 0
    sizes = [path.stat().st_size for path in _entries(root) if path.is_file()]
    return len(sizes), sum(sizes)


def describe(root: Path) -> str:
    """`ROOT (N files, SIZE; without incoming/, .restore/)` for a plan row."""
    count, size = inventory(root)
    return f"{root} ({count} files, {decimal(size)}; without {', '.join(EXCLUDED)})"


def pack(root: Path, target: Path) -> tuple[int, int]:
    """Write the tar of ROOT to TARGET; (files, bytes). A missing ROOT packs as empty.

    A file deleted while it is being packed (a dataset removed meanwhile) is left out.
    """
    files = size = 0
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as tar, tracker() as track:
        if root.is_dir():
            for path in _entries(root):
                try:
                    info = tar.gettarinfo(path, arcname=path.relative_to(root).as_posix())
                    if not info.isfile():
                        tar.addfile(info)
                        continue
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                except FileNotFoundError:
                    continue
                files += 1
                size += info.size
                track.update("files", f"uploaded files: {files} ({decimal(size)})", 0)
        track.update("files", f"uploaded files: {files} ({decimal(size)}), done", 1)
    return files, size


def unpack(source: Path, root: Path) -> int:
    """Make ROOT hold exactly what the tar SOURCE holds (except `incoming/`); files written."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    with tarfile.open(source, mode="r:") as tar:
        members = [m for m in tar.getmembers() if _top(m.name) not in EXCLUDED]
        tar.extractall(staging, members=members, filter="data")
    for old in root.iterdir():
        if old.name not in EXCLUDED:
            _remove(old)
    for new in staging.iterdir():
        os.replace(new, root / new.name)
    staging.rmdir()
    return sum(member.isfile() for member in members)


def _top(name: str) -> str:
    """The top-level entry of a member name (`./datasets/x.csv` -> `datasets`)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return parts[0] if parts else ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
