"""`invoke backup` / `invoke restore` on a real local stack: real PostgreSQL, real upload files.

An isolated stack (own run directory, ports, database, role, vhost and broker user, like
bench/stack.py; all removed afterwards) runs api, worker and flower under supervisord. The test
uploads datasets and runs tasks over HTTP, backs up through the task, changes the data (a new
dataset, a deleted one, a changed result), restores through the task and checks that the API
answers exactly as before the backup, that the files are back, and that the archive holds no
secret. Another restores an archive of an empty database (older than the code's head) and
checks that the migrations ran; the dry runs of both read the running stack (the writers to
stop, the files to replace), change nothing and print exactly the plan the real run then
executes. `backup --verify` restores the dump into a scratch database on this machine's
PostgreSQL and compares the row counts: a good archive verifies, a damaged dump or a changed
count fails, renames the archive and leaves no scratch database, and the stack's database is
never touched. The last test takes a throwaway Debian cluster where the admin may only log in
by peer authentication on the unix socket, as on a fresh install.
"""

from __future__ import annotations

import datetime as dt
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
from psycopg import sql
from support.plans import plan_cells

from desbordante_ops.backup import archive, flow, schema
from desbordante_ops.backup.archive import DATABASE, MEMBERS
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.backup.protocol import Staging
from desbordante_ops.core import console, plan
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


def tables(conn: psycopg.Connection) -> list[tuple[str, sql.Identifier]]:
    """(name as pg_dump writes it, identifier) of every table of the connected database."""
    found = conn.execute(
        "SELECT format('%I.%I', schemaname, tablename), schemaname, tablename FROM pg_tables "
        "WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    return [(name, sql.Identifier(schema_, table)) for name, schema_, table in found]


def table_rows(cfg: EnvConfig) -> dict[str, int]:
    """Rows of every table of the stack's database, named as pg_dump names them."""
    with psycopg.connect(f"{ADMIN} dbname={cfg.value('POSTGRES_DB')}") as conn:
        query = sql.SQL("SELECT count(*) FROM {}")
        return {
            name: conn.execute(query.format(ident)).fetchone()[0]  # type: ignore[index]
            for name, ident in tables(conn)
        }


def table_contents(cfg: EnvConfig) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the stack's database (to prove it was not touched)."""
    with psycopg.connect(f"{ADMIN} dbname={cfg.value('POSTGRES_DB')}") as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1")
        return {name: conn.execute(query.format(ident)).fetchall() for name, ident in tables(conn)}


def scratch_databases(cfg: EnvConfig) -> list[str]:
    with psycopg.connect(f"{ADMIN} dbname=postgres") as conn:
        found = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (f"{cfg.value('POSTGRES_DB')}_verify_",),
        ).fetchall()
    return [name for (name,) in found]


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
    assert manifest.row_counts == table_rows(stack)  # nothing wrote since: what the dump holds

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
    assert [action for action, _ in rows] == [
        "create",
        "create",
        "read",
        "run",
        "pack",
        "run",
        "write",
    ]
    assert "pg_dump -Fc --no-password" in rows[3][1] and f"{len(files_before)} files" in rows[4][1]
    assert "pg_restore --data-only" in rows[5][1]

    backup_tasks.restore(Context(), env="local", archive=str(path), dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    assert rows[2:4] == [
        ("stop", "supervisord program api"),
        ("stop", "supervisord program worker"),
    ]
    assert rows[4][0] == "run" and "pg_restore --no-owner" in rows[4][1]
    assert rows[-3:] == [
        ("start", "supervisord program api"),
        ("start", "supervisord program worker"),
        ("wait", "until api, worker are ready (120 s at most)"),
    ]
    assert snapshot(api) == before and files_of(stack.uploads_dir) == files_before
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # nothing unpacked
    states = ProcessStack(Context(), stack).sup.processes()
    assert {states[name]["statename"] for name in ("api", "worker")} == {"RUNNING"}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[plan.Plan]:
    """Every plan the tasks execute (executed for real by core.plan.execute); one clock
    reading for the whole test, so that a dry run and its real run name the same archive."""
    plans: list[plan.Plan] = []

    def recording(item: plan.Plan, dry_run: bool = False) -> list[plan.Step]:
        plans.append(item)
        return plan.execute(item, dry_run)

    monkeypatch.setattr(backup_tasks, "execute", recording)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    monkeypatch.setattr(archive, "utc_now", lambda: now)
    monkeypatch.setattr(console.console, "width", 1000)  # one table row per line
    return plans


def assert_same_plan(seen: list[plan.Seen], plans: list[plan.Plan]) -> None:
    """The dry run printed the rows the real run printed, and the real run ran exactly the
    runnable ones, in order; the dry run ran none."""
    (dry, real), (_, executed) = seen, plans
    assert (dry.dry_run, real.dry_run) == (True, False)
    assert dry.rows == real.rows and dry.title == real.title
    assert dry.ran == [] and real.ran == plan.runnable(executed.steps)
    assert len(real.ran) >= 5


def test_backup_with_verify_runs_exactly_the_plan_its_dry_run_printed(
    stack: EnvConfig,
    api: httpx.Client,
    tmp_path: Path,
    built: list[plan.Plan],
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload(api, "verified.csv", FD_CSV)
    out = tmp_path / "backups"
    before = table_contents(stack)
    with plan.watching() as seen:
        backup_tasks.backup(Context(), env="local", output=str(out), verify=True, dry_run=True)
        printed = plan_cells(capsys.readouterr().out)
        assert not out.exists() and scratch_databases(stack) == []
        backup_tasks.backup(Context(), env="local", output=str(out), verify=True)
    assert_same_plan(seen, built)
    assert printed == [(a, " ".join(t.split())) for a, t in seen[0].rows]
    assert [a for a, _ in seen[0].rows[-6:]] == ["unpack", "run", "run", "count", "run", "compare"]
    path = only_archive(out)
    assert ".unverified" not in path.name and [p.name for p in out.iterdir()] == [path.name]
    assert archive.read_manifest(path).row_counts == table_rows(stack)
    assert f"{path.name} verified: its dump restores" in capsys.readouterr().out
    assert scratch_databases(stack) == [] and table_contents(stack) == before


def test_restore_runs_exactly_the_plan_its_dry_run_printed(
    stack: EnvConfig, api: httpx.Client, tmp_path: Path, built: list[plan.Plan]
) -> None:
    upload(api, "restored.csv", NEW_CSV)
    flow.backup(LocalTarget(Context(), stack), tmp_path)
    path = only_archive(tmp_path)
    before = snapshot(api)
    with plan.watching() as seen:
        backup_tasks.restore(Context(), env="local", archive=str(path), yes=True, dry_run=True)
        backup_tasks.restore(Context(), env="local", archive=str(path), yes=True)
    assert_same_plan(seen, built)
    assert [action for action, _ in seen[0].rows] == [
        "unpack",
        "stop",
        "stop",
        "run",
        "replace",
        "skip",
        "start",
        "start",
        "wait",
    ]
    assert snapshot(api) == before  # restored what it held: the same answers, writers running
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]


def rewritten(path: Path, tmp_path: Path, dump: bytes | None = None, **manifest: Any) -> None:
    """Write the archive at PATH again with DUMP and MANIFEST changes; checksums fit the new
    members, so only restoring the dump or comparing the counts can find what changed."""
    staged = tmp_path / "staged"
    with tarfile.open(path) as tar:
        tar.extractall(staged, members=[tar.getmember(name) for name in MEMBERS], filter="data")
    if dump is not None:
        (staged / DATABASE).write_bytes(dump)
    old = archive.read_manifest(path)
    archive.write_archive(
        path, old.model_copy(update={"members": {}, **manifest}), {n: staged / n for n in MEMBERS}
    )
    shutil.rmtree(staged)


@pytest.mark.parametrize("damage", ["truncated dump", "changed count"])
def test_a_verification_that_fails_renames_the_archive_and_leaves_no_scratch_database(
    stack: EnvConfig,
    api: httpx.Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    upload(api, "damaged.csv", UCC_CSV)
    path = flow.backup(LocalTarget(Context(), stack), tmp_path)
    manifest = archive.read_manifest(path)
    assert manifest.row_counts
    if damage == "truncated dump":
        with tarfile.open(path) as tar:
            dump = tar.extractfile(DATABASE).read()  # type: ignore[union-attr]
        rewritten(path, tmp_path, dump=dump[: len(dump) * 2 // 3])
        expected = "failed while restoring the dump into the scratch database: pg_restore | psql:"
    else:
        counts = dict(manifest.row_counts)
        counts["public.datasets"] += 1
        rewritten(path, tmp_path, row_counts=counts)
        found = manifest.row_counts["public.datasets"]
        expected = (
            "failed while comparing the row counts: the row counts differ from the manifest's: "
            f"public.datasets has {found} rows instead of {found + 1}."
        )
    before, answers = table_contents(stack), snapshot(api)
    capsys.readouterr()

    with pytest.raises(Exit) as raised:
        backup_tasks.backup(Context(), env="local", verify=str(path))

    message = str(raised.value.message)
    unverified = archive.unverified_name(path)
    assert message.startswith(f"Verification of {path.name} {expected}") and "\n" not in message
    assert message.endswith(
        f"The archive is kept as {unverified.name}; do not rely on it: take a new backup."
    )
    assert unverified.is_file() and not path.exists()
    assert [entry.name for entry in tmp_path.iterdir()] == [unverified.name]  # no staging left
    assert scratch_databases(stack) == []
    assert table_contents(stack) == before and snapshot(api) == answers  # never touched


def test_an_archive_without_row_counts_cannot_be_verified(stack: EnvConfig, tmp_path: Path) -> None:
    path = flow.backup(LocalTarget(Context(), stack), tmp_path)
    rewritten(path, tmp_path, row_counts=None)
    for dry_run in (True, False):
        with pytest.raises(Exit) as raised:
            backup_tasks.backup(Context(), env="local", verify=str(path), dry_run=dry_run)
        assert str(raised.value.message) == (
            f"{path.name} records no row counts (an archive of an older toolkit), so its restore "
            "cannot be compared with them; take a new backup (`invoke backup --verify`)."
        )
    assert path.is_file() and scratch_databases(stack) == []


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
    flags = {
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": app,
        "POSTGRES_DB": app,
        "LOCAL_RUN_DIR": str(tmp_path / "run"),
        "UPLOADED_FILES_DIR_PATH": str(tmp_path / "uploads"),
    }
    target = LocalTarget(Context(), load_config("local", flags=flags))
    assert target.schema_revision() == "0001"
    assert target._route()[0].startswith("runuser -u postgres -- ")  # found, not given
    staging = Staging(tmp_path / "staging")  # a directory the postgres OS user may not write
    staging.create()
    dump, _ = target.backup_steps(staging)
    assert dump.run is not None
    dump.run()
    assert staging.database.read_bytes().startswith(b"PGDMP")
    as_postgres(port, "UPDATE t SET v = 'changed'; CREATE TABLE newer (x int)", dbname=app)

    (restore,) = target.restore_steps(staging, schema.plan("0001"), []).database
    assert restore.run is not None
    restore.run()

    assert as_postgres(port, "SELECT v FROM t", dbname=app) == "kept"
    assert as_postgres(port, "SELECT to_regclass('newer') IS NULL", dbname=app) == "t"
    assert as_postgres(port, "SELECT tableowner FROM pg_tables WHERE tablename='t'", app) == app
    # A whole backup, verified on the same route: the scratch database is made, restored into,
    # counted and dropped by the postgres OS user; the archive keeps its name.
    path = flow.backup(target, tmp_path / "backups", verify_it=True)
    assert archive.read_manifest(path).row_counts == {"public.alembic_version": 1, "public.t": 1}
    assert path.is_file() and ".unverified" not in path.name
    left = as_postgres(port, "SELECT count(*) FROM pg_database WHERE datname LIKE '%_verify_%'")
    assert left == "0"
