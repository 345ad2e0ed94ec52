"""The uploads directory shared by the API and the workers.

Datasets live at `<root>/datasets/<id>.csv`; uploads in progress at `<root>/incoming/<id>.part`,
on the same filesystem so that accepting an upload is an atomic rename. While an upload is in
progress its API process holds an exclusive `flock` on `<root>/incoming/<id>.lease`, so that
retention can tell a crash leftover from an upload that is still running.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UploadLease:
    """Taken before the part file is created, released after the dataset row is committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # releases the lock
        self.fd = None


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.datasets = root / "datasets"
        self.incoming = root / "incoming"

    def ensure(self) -> None:
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def dataset_path(self, dataset_id: uuid.UUID) -> Path:
        return self.datasets / f"{dataset_id}.csv"

    def part_path(self, dataset_id: uuid.UUID) -> Path:
        return self.incoming / f"{dataset_id}.part"

    def lease_path(self, dataset_id: uuid.UUID) -> Path:
        return self.incoming / f"{dataset_id}.lease"

    def lease_upload(self, dataset_id: uuid.UUID) -> UploadLease:
        return UploadLease(self.lease_path(dataset_id))

    @contextmanager
    def abandoned(self, dataset_id: uuid.UUID) -> Iterator[bool]:
        """True unless an upload of this id is in progress; its lease is held meanwhile."""
        path = self.lease_path(dataset_id)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # no upload of this id runs (or ever ran with a lease)
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
            path.unlink(missing_ok=True)  # the lease of a dead process
        finally:
            os.close(fd)

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created, written and removed."""
        self.ensure()
        probe = self.incoming / f".probe-{uuid.uuid4()}"
        try:
            probe.write_bytes(b"ok")
        finally:
            probe.unlink(missing_ok=True)
