"""The uploads directory shared by the API and the workers.

Datasets live at `<root>/datasets/<id>.csv`; uploads in progress at `<root>/incoming/<id>.part`,
on the same filesystem so that accepting an upload is an atomic rename.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

STALE_PART_SECONDS = 6 * 3600


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

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created, written and removed."""
        self.ensure()
        probe = self.incoming / f".probe-{uuid.uuid4()}"
        try:
            probe.write_bytes(b"ok")
        finally:
            probe.unlink(missing_ok=True)

    def remove_stale_parts(self, older_than: float = STALE_PART_SECONDS) -> int:
        """Remove leftovers of uploads whose process died (other replicas' recent ones stay)."""
        cutoff = time.time() - older_than
        removed = 0
        for part in self.incoming.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
