"""Upload directory full (a 2 MiB tmpfs): a clear 507, nothing left behind, then uploads work."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serviceprocs import Api, wait_for

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


def test_a_write_that_finds_the_disk_full_answers_507_and_leaves_nothing(
    launch, db, small_uploads
) -> None:
    """The disk fills up during the upload (after the API measured its free space): the write
    itself fails with ENOSPC; the chunked body declares no size to refuse it by."""
    api = launch(Api, UPLOADED_FILES_DIR_PATH=str(small_uploads))
    before = stored(db, small_uploads)
    content = random_csv(columns=10, rows=60_000, values=9, seed=6)  # ~1.2 MB
    filler = small_uploads / "filler.bin"

    def body():
        yield b'--d\r\nContent-Disposition: form-data; name="file"; filename="f.csv"\r\n\r\n'
        yield content[:65536]
        wait_for(lambda: stored(db, small_uploads)["incoming"], 30, "the upload's part file")
        free = shutil.disk_usage(small_uploads).free
        filler.write_bytes(b"\0" * (free - 128 * 1024))  # someone else fills the volume
        yield content[65536:]
        yield b"\r\n--d--\r\n"

    full = api.client.post(
        "/api/v1/datasets",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=d"},
    )

    assert full.status_code == 507, full.text
    assert full.json() == {"detail": "not enough storage space for this upload"}
    assert stored(db, small_uploads) == before
    filler.unlink()
    upload_ok(api.client, "cities.csv", CITIES)


def test_the_quota_answers_507_before_the_disk_is_full(launch, db, small_uploads) -> None:
    stored_bytes = db.execute("SELECT coalesce(sum(size), 0) FROM datasets").fetchone()[0]
    quota = stored_bytes + 1024 * 1024  # half of the 2 MiB volume
    api = launch(Api, UPLOADED_FILES_DIR_PATH=str(small_uploads), UPLOAD_QUOTA_BYTES=str(quota))
    part = random_csv(columns=10, rows=15_000, values=9, seed=7)  # ~300 kB
    accepted: list[str] = []

    answer = upload(api.client, "part.csv", part)
    for _ in range(10):  # bounded: the quota allows three
        if answer.status_code != 201:
            break
        accepted.append(answer.json()["id"])
        answer = upload(api.client, "part.csv", part)

    assert len(accepted) == 3
    assert answer.status_code == 507, answer.text
    assert "storage quota" in answer.json()["detail"]
    assert "delete datasets or raise UPLOAD_QUOTA_BYTES" in answer.json()["detail"]
    assert shutil.disk_usage(small_uploads).free > len(part)  # the disk itself had room
    assert not stored(db, small_uploads)["incoming"]
    assert api.client.delete(f"/api/v1/datasets/{accepted[0]}").status_code == 204
    upload_ok(api.client, "part.csv", part)
