"""`invoke backup` / `invoke restore` on a real local stack: real PostgreSQL, real upload files.

An isolated stack (own run directory, ports, database, role, vhost and broker user, like
bench/stack.py; all removed afterwards) runs api, worker and flower under supervisord. The test
uploads datasets and runs tasks over HTTP, backs up through the task, changes the data (a new
dataset, a deleted one, a changed result), restores through the task and checks that the API
answers exactly as before the backup, that the files are back, and that the archive holds no
secret. Another restores an archive of an empty database (older than the code's head) and
checks that the migrations ran; the dry runs of both read the running stack (the writers to
stop, the files to replace) and change nothing; the last one takes a throwaway Debian cluster
where the admin may only log in by peer authentication on the unix socket, as on a fresh
install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import psycopg
import pytest
from invoke import Context, Exit
from support.plans import plan_cells

from desbordante_ops.backup import archive, flow
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.core import console
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local.credentials import read_secret, secrets_dir
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.tasks import backup as backup_tasks

ADMIN = "host=127.0.0.1 port=5432 user=postgres"
FD_CSV = "id,city,zip\n1,Berlin,10115\n2,Berlin,10115\n3,Munich,80331\n4,Hamburg,20095\n"
UCC_CSV = "id,first,last\n1,ann,lee\n2,bob,lee\n3,ann,kim\n4,carl,kim\n"
NEW_CSV = "a,b\n1,2\n3,4\n"
TASK_DEADLINE_SECONDS = 120


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def admin(*statements: str, dbname: str = "postgres") -> None:
    with psycopg.connect(f"{ADMIN} dbname={dbname}", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def overrides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The isolated stack's settings, as process-environment overrides (like a user's)."""
    name = f"bk_{uuid.uuid4().hex[:10]}"
    run = tmp_path_factory.mktemp("stack")
    values = {
        "LOCAL_RUN_DIR": str(run / "run"),
        "UPLOADED_FILES_DIR_PATH": str(run / "uploads"),
        "APPLICATION_SERVER_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "POSTGRES_USER": name,
        "POSTGRES_DB": name,
        "RABBITMQ_DEFAULT_USER": name,
        "RABBITMQ_VHOST": name,
        "WORKER_CONCURRENCY": "1",
        "LOG_LEVEL": "WARNING",
    }
    with mock.patch.dict(os.environ, values):
        yield values
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{name}"')
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "-q", "delete_user", name], capture_output=True, check=False)
        subprocess.run([ctl, "-q", "delete_vhost", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def stack(overrides: dict[str, str]) -> Iterator[EnvConfig]:
    cfg = load_config("local")
    running = ProcessStack(Context(), cfg)
    running.up(timeout=120)
    try:
        yield cfg
    finally:
        running.down(timeout=30)


@pytest.fixture(scope="module")
def api(stack: EnvConfig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{stack.toolkit.API_BASE_URL}/api/v1", timeout=60) as client:
        yield client


def upload(api: httpx.Client, name: str, content: str) -> dict[str, Any]:
    response = api.post(
        "/datasets",
        files={"file": (name, content, "text/csv")},
        data={"separator": ",", "has_header": "true"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def run_task(api: httpx.Client, dataset_id: str, primitive: str) -> dict[str, Any]:
    created = api.post("/tasks", json={"dataset_id": dataset_id, "primitive": primitive})
    assert created.status_code == 202, created.text
    end = time.monotonic() + TASK_DEADLINE_SECONDS
    while time.monotonic() < end:
        task = api.get(f"/tasks/{created.json()['id']}", params={"wait": 20}, timeout=60).json()
        if task["status"] in ("succeeded", "failed"):
            assert task["status"] == "succeeded", task["error"]
            return dict(task)
    pytest.fail(f"task {created.json()['id']} not finished within {TASK_DEADLINE_SECONDS}s")


def snapshot(api: httpx.Client) -> dict[str, Any]:
    """Every answer of the read endpoints: lists and each dataset and task."""
    datasets = api.get("/datasets", params={"limit": 500}).json()
    tasks = api.get("/tasks", params={"limit": 500}).json()
    return {
        "datasets": datasets,
        "tasks": tasks,
        "dataset": {d["id"]: api.get(f"/datasets/{d['id']}").json() for d in datasets},
        "task": {t["id"]: api.get(f"/tasks/{t['id']}").json() for t in tasks},
    }


def files_of(root: Path) -> dict[str, str]:
    """sha256 of every file under ROOT except uploads in progress."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] != "incoming"
    }


def only_archive(directory: Path) -> Path:
    found = sorted(directory.glob(f"*{archive.SUFFIX}"))
    assert len(found) == 1, found
    return found[0]


def test_backup_change_restore_gives_the_exact_earlier_answers(
    stack: EnvConfig, api: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = upload(api, "cities.csv", FD_CSV)
    doomed = upload(api, "people.csv", UCC_CSV)
    fd_task = run_task(api, kept["id"], "fd")
    ucc_task = run_task(api, doomed["id"], "ucc")
    before, files_before = snapshot(api), files_of(stack.uploads_dir)
    assert len(before["datasets"]) == 2 and len(files_before) == 2

    backup_tasks.backup(Context(), env="local", output=str(tmp_path / "backups"))
    path = only_archive(tmp_path / "backups")
    assert path.stat().st_mode & 0o777 == 0o600
    manifest = archive.read_manifest(path)
    assert (manifest.env, manifest.schema_revision) == ("local", "0001")
    assert set(manifest.members) == {archive.DATABASE, archive.UPLOADS}

    # Change everything the restore must undo.
    added = upload(api, "new.csv", NEW_CSV)
    assert api.delete(f"/datasets/{doomed['id']}").status_code == 204
    with psycopg.connect(f"{ADMIN} dbname={stack.value('POSTGRES_DB')}") as conn:
        conn.execute(
            "UPDATE profiling_tasks SET result = '{\"fds\": []}'::jsonb WHERE id = %s",
            (fd_task["id"],),
        )
    changed = snapshot(api)
    assert changed != before and changed["task"][fd_task["id"]]["result"] == {"fds": []}
    assert files_of(stack.uploads_dir) != files_before

    backup_tasks.restore(Context(), env="local", archive=str(path), yes=True)

    assert snapshot(api) == before  # the exact earlier answers, the changed result included
    assert files_of(stack.uploads_dir) == files_before
    assert api.get(f"/datasets/{added['id']}").status_code == 404
    # The restored file of the deleted dataset is usable: a new task gives the same result.
    assert run_task(api, doomed["id"], "ucc")["result"] == ucc_task["result"]
    out = capsys.readouterr().out
    assert "restored from" in out and "api, worker running again" in out

    # No secret in the archive, in any member, compressed or not (the dump is compressed:
    # search its SQL text as well).
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        tar.extract(archive.DATABASE, tmp_path, filter="data")
    sql = subprocess.run(
        ["pg_restore", "-f", "-", str(tmp_path / archive.DATABASE)], capture_output=True, check=True
    ).stdout
    assert b"CREATE TABLE public.profiling_tasks" in sql  # the dump's text is searchable
    values = [read_secret(p) for p in secrets_dir(root=stack.root).iterdir() if p.is_file()]
    assert values
    for value in values:
        assert value.encode() not in data and value.encode() not in sql


def test_restoring_an_archive_older_than_head_migrates(
    stack: EnvConfig, api: httpx.Client, tmp_path: Path
) -> None:
    empty = f"bk_empty_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{empty}"')
    try:
        flags = {"POSTGRES_DB": empty, "UPLOADED_FILES_DIR_PATH": str(tmp_path / "none")}
        source = load_config("local", flags=flags)
        path = flow.backup(LocalTarget(Context(), source), tmp_path)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
    assert archive.read_manifest(path).schema_revision is None

    flow.restore(LocalTarget(Context(), stack), path, yes=True)

    assert api.get("/datasets").json() == []  # restored: nothing; migrated: the API works
    assert upload(api, "after.csv", NEW_CSV)["id"]


def test_restore_without_terminal_or_yes_changes_nothing(
    stack: EnvConfig, api: httpx.Client, tmp_path: Path
) -> None:
    backup_tasks.backup(Context(), env="local", output=str(tmp_path))
    before = snapshot(api)
    with pytest.raises(Exit, match="No terminal to confirm on; nothing was changed"):
        flow.restore(LocalTarget(Context(), stack), only_archive(tmp_path), interactive=False)
    assert snapshot(api) == before


def test_dry_runs_on_the_running_stack_read_it_and_change_nothing(
    stack: EnvConfig,
    api: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(console.console, "width", 1000)  # one table row per line
    upload(api, "dry.csv", NEW_CSV)
    backup_tasks.backup(Context(), env="local", output=str(tmp_path / "real"))
    path = only_archive(tmp_path / "real")
    before, files_before = snapshot(api), files_of(stack.uploads_dir)
    capsys.readouterr()

    backup_tasks.backup(Context(), env="local", output=str(tmp_path / "dry"), dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    assert not (tmp_path / "dry").exists()
    assert [action for action, _ in rows] == ["create", "run", "pack", "write"]
    assert "pg_dump -Fc --no-password" in rows[1][1] and f"{len(files_before)} files" in rows[2][1]

    backup_tasks.restore(Context(), env="local", archive=str(path), dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    assert rows[2:4] == [
        ("stop", "supervisord program api"),
        ("stop", "supervisord program worker"),
    ]
    assert rows[4][0] == "run" and "pg_restore --no-owner" in rows[4][1]
    assert rows[-2:] == [
        ("start", "supervisord program api (and wait until ready)"),
        ("start", "supervisord program worker (and wait until ready)"),
    ]
    assert snapshot(api) == before and files_of(stack.uploads_dir) == files_before
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # nothing unpacked
    states = ProcessStack(Context(), stack).sup.processes()
    assert {states[name]["statename"] for name in ("api", "worker")} == {"RUNNING"}


@pytest.fixture
def peer_auth_cluster() -> Iterator[int]:
    """A throwaway Debian cluster with the distribution's default authentication (peer for
    postgres on the unix socket, a password on 127.0.0.1), running; its port."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        pytest.skip("needs root and Debian's postgresql-common (pg_createcluster)")
    versions = sorted((p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir()), key=float)
    version, name, port = versions[-1], f"bk_{uuid.uuid4().hex[:8]}", free_port()
    created = subprocess.run(
        ["pg_createcluster", "--start", "-p", port, "-o", "shared_buffers=16MB", version, name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    try:
        yield int(port)
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], check=True)


def as_postgres(port: int, sql: str, dbname: str = "postgres") -> str:
    """psql as the postgres OS user on the socket (the test's own admin access)."""
    psql = ["psql", "-X", "-A", "-t", "-p", str(port), "-d", dbname, "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *psql, "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_database_round_trip_through_peer_auth_on_the_socket(
    peer_auth_cluster: int, tmp_path: Path
) -> None:
    """Where the admin may not log in over TCP (a fresh Debian install), backup and restore take
    the route `invoke up` takes: the clients run as the postgres OS user on the unix socket."""
    port, app = peer_auth_cluster, f"bk_app_{uuid.uuid4().hex[:6]}"
    as_postgres(port, f'CREATE ROLE "{app}" LOGIN')
    as_postgres(port, f'CREATE DATABASE "{app}" OWNER "{app}"')
    as_postgres(
        port,
        "CREATE TABLE alembic_version (version_num varchar(32)); "
        "INSERT INTO alembic_version VALUES ('0001'); "
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'kept');",
        dbname=app,
    )
    flags = {"POSTGRES_PORT": str(port), "POSTGRES_USER": app, "POSTGRES_DB": app}
    target = LocalTarget(Context(), load_config("local", flags=flags))
    assert target.schema_revision() == "0001"
    assert target._route()[0].startswith("runuser -u postgres -- ")  # found, not given
    dump = tmp_path / "database.dump"  # a directory the postgres OS user may not write
    target.dump_database(dump)
    assert dump.read_bytes().startswith(b"PGDMP")
    as_postgres(port, "UPDATE t SET v = 'changed'; CREATE TABLE newer (x int)", dbname=app)

    target.restore_database(dump)

    assert as_postgres(port, "SELECT v FROM t", dbname=app) == "kept"
    assert as_postgres(port, "SELECT to_regclass('newer') IS NULL", dbname=app) == "t"
    assert as_postgres(port, "SELECT tableowner FROM pg_tables WHERE tablename='t'", app) == app
