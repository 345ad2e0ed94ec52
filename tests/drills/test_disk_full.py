"""Upload directory full (a 2 MiB tmpfs): a clear 507, nothing left behind, then uploads work."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serviceprocs import Api

from .calls import CITIES, random_csv, stored, upload, upload_ok

pytestmark = pytest.mark.timeout(120)

TMPFS_SIZE = "2m"


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def small_uploads(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs as the upload directory; unmounted at the end whatever happens."""
    path = tmp_path / "small-uploads"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the size cap (413) is covered by tests/backend")
    mounted = _mount("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        unmounted = _mount("umount", str(path))
        if unmounted.returncode != 0:
            _mount("umount", "-l", str(path))


def test_disk_full_answers_507_and_leaves_nothing(launch, db, small_uploads) -> None:
    api = launch(Api, UPLOADED_FILES_DIR_PATH=str(small_uploads))
    before = stored(db, small_uploads)
    too_big = random_csv(columns=10, rows=150_000, values=9, seed=5)  # ~3 MB > 2 MiB tmpfs
    assert len(too_big) > 2 * 1024 * 1024

    full = upload(api.client, "big.csv", too_big)

    assert full.status_code == 507, full.text
    assert full.json() == {"detail": "not enough storage space for this upload"}
    assert stored(db, small_uploads) == before
    # The space is free again: a small upload is accepted and the API is still ready.
    accepted = upload_ok(api.client, "cities.csv", CITIES)
    assert f"{accepted['id']}.csv" in stored(db, small_uploads)["datasets"]
    assert api.client.get("/health/ready").status_code == 200
