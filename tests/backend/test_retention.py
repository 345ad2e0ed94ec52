"""`desbordante-service retention` on the real database and upload directory.

The module has its own database and upload directory, emptied before each test, so every count
and every row and file that must stay untouched is known. Data is uploaded through the real API
process, then aged in the database (`created_at`) and on disk (mtime).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from servicekit import run_service, scalar
from serviceprocs import Api, ServiceProcess, wait_for

pytestmark = pytest.mark.timeout(300)

CITIES = b"id,city\n1,A\n2,B\n"
DAY = 86_400
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _report(deleted=(0, 0, 0), leftovers=0, stale=0, kept=(0, 0)) -> str:
    return (
        f"retention: deleted {deleted[0]} datasets with {deleted[1]} tasks and {deleted[2]} "
        f"files; removed {leftovers} leftover files; failed {stale} stale running tasks; kept "
        f"{kept[0]} old datasets with queued or running tasks and {kept[1]} uploads in progress"
    )


@pytest.fixture(scope="module")
def server(own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api = Api(own_env, tmp_path_factory.mktemp("api") / "api.log")
    yield api
    api.stop()


class Scene:
    """Datasets, tasks and files of the module's database and upload directory."""

    def __init__(self, server: Api, db: psycopg.Connection, uploads: Path) -> None:
        self.server = server
        self.db = db
        self.uploads = uploads

    def dataset(self, days_old: float = 0) -> str:
        response = self.server.client.post("/api/v1/datasets", files={"file": ("c.csv", CITIES)})
        assert response.status_code == 201, response.text
        dataset_id = response.json()["id"]
        self.db.execute(
            "UPDATE datasets SET created_at = now() - make_interval(days => %s) WHERE id = %s",
            (days_old, dataset_id),
        )
        self.age(self.uploads / "datasets" / f"{dataset_id}.csv", days_old)
        return dataset_id

    def task(self, dataset_id: str, status: str, started_days_ago: float = 0) -> str:
        body = {"dataset_id": dataset_id, "primitive": "fd"}
        response = self.server.client.post("/api/v1/tasks", json=body)
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]
        self.db.execute(
            "UPDATE profiling_tasks SET status = %s, attempts = 1,"
            " started_at = now() - make_interval(days => %s),"
            " finished_at = CASE WHEN %s IN ('succeeded', 'failed') THEN now() END,"
            " result = CASE WHEN %s = 'succeeded' THEN '{\"fds\": []}'::jsonb END"
            " WHERE id = %s",
            (status, started_days_ago, status, status, task_id),
        )
        return task_id

    def file(self, relative: str, days_old: float) -> Path:
        path = self.uploads / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        self.age(path, days_old)
        return path

    @staticmethod
    def age(path: Path, days: float) -> None:
        then = time.time() - days * DAY
        os.utime(path, (then, then))

    def exists(self, dataset_id: str) -> bool:
        query = "SELECT count(*) FROM datasets WHERE id = %s"
        return scalar(self.db, query, (dataset_id,)) == 1

    def snapshot(self) -> dict[str, dict]:
        datasets = self.db.execute("SELECT id::text, created_at, sha256 FROM datasets").fetchall()
        tasks = self.db.execute(
            "SELECT id::text, dataset_id::text, status::text, attempts, started_at, finished_at,"
            " result, error FROM profiling_tasks"
        ).fetchall()
        files = {
            str(path.relative_to(self.uploads)): (path.stat().st_mtime, path.stat().st_size)
            for path in self.uploads.rglob("*")
            if path.is_file()
        }
        return {
            "datasets": {row[0]: row[1:] for row in datasets},
            "tasks": {row[0]: row[1:] for row in tasks},
            "files": files,
        }


@pytest.fixture
def scene(server: Api, own_env: dict[str, str], connect) -> Iterator[Scene]:
    """An empty database and upload directory to start from."""
    uploads = Path(own_env["UPLOADED_FILES_DIR_PATH"])
    with connect(own_env) as db:
        db.execute("TRUNCATE datasets, profiling_tasks")
        for path in uploads.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        yield Scene(server, db, uploads)


Retention = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def retention(own_env: dict[str, str]) -> Retention:
    def _run(*args: str, **overrides: str) -> subprocess.CompletedProcess:
        env = {**own_env, "RETENTION_DAYS": "7", **overrides}
        return run_service("retention", *args, env=env, timeout=120)

    return _run


def _without(snapshot: dict[str, dict], **gone: list[str]) -> dict[str, dict]:
    return {
        kind: {key: value for key, value in items.items() if key not in gone.get(kind, [])}
        for kind, items in snapshot.items()
    }


def test_one_pass_deletes_old_data_and_touches_nothing_else(scene: Scene, retention) -> None:
    old = scene.dataset(days_old=10)
    old_tasks = [scene.task(old, "succeeded"), scene.task(old, "failed")]
    running = scene.dataset(days_old=10)
    scene.task(running, "running")
    scene.task(running, "succeeded")
    queued = scene.dataset(days_old=10)
    scene.task(queued, "queued")
    recent = scene.dataset(days_old=6)
    scene.task(recent, "succeeded")
    scene.dataset()
    leftovers = [
        scene.file(f"datasets/{uuid.uuid4()}.csv", days_old=10),
        scene.file(f"incoming/{uuid.uuid4()}.part", days_old=10),
        scene.file(f"incoming/{uuid.uuid4()}.lease", days_old=10),
    ]
    scene.file(f"datasets/{uuid.uuid4()}.csv", days_old=6)  # a young leftover
    scene.file(f"incoming/{uuid.uuid4()}.part", days_old=0)
    for foreign in ("datasets/notes.csv", "incoming/x.part", f"datasets/{uuid.uuid4().hex}.csv"):
        scene.file(foreign, days_old=10)
    scene.file("lost+found/keep", days_old=10)
    before = scene.snapshot()

    result = retention()

    assert result.returncode == 0, result.stderr
    expected = _without(
        before,
        datasets=[old],
        tasks=old_tasks,
        files=[f"datasets/{old}.csv", *(str(p.relative_to(scene.uploads)) for p in leftovers)],
    )
    assert scene.snapshot() == expected
    assert _report(deleted=(1, 2, 1), leftovers=3, kept=(2, 0)) in result.stderr
    assert not UUID.search(result.stderr), "only counts are logged"

    again = retention()

    assert again.returncode == 0, again.stderr
    assert _report(kept=(2, 0)) in again.stderr
    assert scene.snapshot() == expected


def test_a_running_task_whose_worker_vanished_is_failed_then_deleted(scene, retention) -> None:
    old = scene.dataset(days_old=10)
    scene.task(old, "running", started_days_ago=9)

    result = retention()

    assert result.returncode == 0, result.stderr
    assert _report(deleted=(1, 1, 1), stale=1) in result.stderr
    assert not scene.exists(old)


def test_a_task_being_created_keeps_its_old_dataset(scene, retention, own_env) -> None:
    """Task creation holds a share lock on the dataset row until it commits the task."""
    old = scene.dataset(days_old=10)
    dsn = f"host=127.0.0.1 user=postgres dbname={own_env['POSTGRES_DB']}"
    with psycopg.connect(dsn) as creating:  # one transaction, as in create_task
        creating.execute("SELECT id FROM datasets WHERE id = %s FOR SHARE", (old,))

        during = retention()  # does not wait for the lock, and does not delete the row

        assert during.returncode == 0, during.stderr
        assert _report() in during.stderr
        creating.execute(
            "INSERT INTO profiling_tasks (id, dataset_id, primitive, algorithm, config,"
            " time_limit, status, attempts) VALUES (%s, %s, 'fd', 'HyFD', '{}', 60, 'queued', 0)",
            (uuid.uuid4(), old),
        )
    after = retention()

    assert _report(kept=(1, 0)) in after.stderr
    assert scene.exists(old)
    assert (scene.uploads / "datasets" / f"{old}.csv").exists()


def test_an_upload_in_progress_is_never_removed(scene, retention, server) -> None:
    release = threading.Event()
    answers: list[httpx.Response] = []
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n\r\nid,city\n'

    def body() -> Iterator[bytes]:
        yield head
        release.wait(60)
        yield b"1,A\n\r\n--B--\r\n"

    def post() -> None:
        headers = {"content-type": "multipart/form-data; boundary=B"}
        answers.append(httpx.post(f"{server.url}/api/v1/datasets", content=body(), headers=headers))

    uploading = threading.Thread(target=post)
    uploading.start()
    try:
        incoming = scene.uploads / "incoming"
        part = wait_for(lambda: next(incoming.glob("*.part"), None), 30, "the part file")
        lease = part.with_suffix(".lease")
        for path in (part, lease):  # as if it had been stalled for ten days
            scene.age(path, 10)

        result = retention()

        assert result.returncode == 0, result.stderr
        assert _report(kept=(0, 1)) in result.stderr
        assert part.exists() and lease.exists()
    finally:
        release.set()
        uploading.join(timeout=60)
    assert answers[0].status_code == 201, answers[0].text
    assert (scene.uploads / "datasets" / f"{part.stem}.csv").exists()
    assert list(incoming.iterdir()) == []


def test_off_deletes_nothing(scene, retention) -> None:
    old = scene.dataset(days_old=400)
    scene.file(f"incoming/{uuid.uuid4()}.part", days_old=400)
    before = scene.snapshot()

    result = retention(RETENTION_DAYS="0")

    assert result.returncode == 0, result.stderr
    assert "retention: off (RETENTION_DAYS=0): nothing is deleted" in result.stderr
    assert scene.snapshot() == before
    assert scene.exists(old)


def test_unreachable_database_exits_1_with_one_line(retention) -> None:
    result = retention(POSTGRES_PORT="1")

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "retention: failed: connection" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "overrides", "message"),
    [
        ((), {"RETENTION_DAYS": "-1"}, "configuration error: RETENTION_DAYS: Input should be"),
        ((), {"RETENTION_DAYS": "week"}, "configuration error: RETENTION_DAYS: Input should be"),
        (("--interval", "0"), {}, "--interval: must be a positive number of seconds, not '0'"),
        (("--interval", "soon"), {}, "--interval: must be a positive number of seconds"),
    ],
)
def test_bad_settings_or_arguments_exit_2(retention, args, overrides, message) -> None:
    result = retention(*args, **overrides)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_interval_repeats_the_pass_and_stops_on_sigterm(scene, own_env, tmp_path) -> None:
    env = {**own_env, "RETENTION_DAYS": "7", "PYTHONUNBUFFERED": "1"}
    looping = ServiceProcess("retention", env, tmp_path / "retention.log", "--interval", "0.5")
    try:
        looping.wait_log(_report())
        old = scene.dataset(days_old=10)

        # The pass logs its report after deleting: wait for the report, not for the row.
        looping.wait_log(_report(deleted=(1, 0, 1)), timeout=30)

        assert not scene.exists(old)
    finally:
        code = looping.stop(timeout=30)
    assert code == 0, looping.output()[-2000:]
