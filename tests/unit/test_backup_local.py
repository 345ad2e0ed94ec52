"""The local stack's backup, restore and verification steps on both admin routes: each row is
the command its step runs (MockContext; the TCP route runs for real in
tests/integration/test_backup_local.py)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import commands
from support.plans import plan_cells, snapshot

from desbordante_ops.backup import archive, flow, postgres, schema, scratch
from desbordante_ops.backup.archive import DATABASE, UPLOADS, Manifest
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.backup.protocol import Facts, Scratch, Staging
from desbordante_ops.core.plan import Plan, Step, print_steps
from desbordante_ops.core.settings import EnvConfig, load_config

CREATED = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
TCP = "-h 127.0.0.1 -p 5432 -U postgres -d desbordante"


@pytest.fixture
def cfg(tmp_path: Path) -> EnvConfig:
    return load_config("local", flags={"LOCAL_RUN_DIR": str(tmp_path / "run")}, environ={})


def context(**answers: Result) -> MockContext:
    return MockContext(
        run={re.compile(pattern): result for pattern, result in answers.items()}
        | {re.compile("sudo -n true"): Result(), re.compile(".*"): Result()},
        repeat=True,
    )


def ran(c: MockContext) -> list[str]:
    return [cmd for cmd in commands(c) if "sudo -n true" not in cmd]


def run_all(steps: list[Step]) -> None:
    for item in steps:
        if item.run is not None:
            item.run()


def test_socket_route_runs_the_clients_as_the_postgres_user(cfg: EnvConfig, tmp_path: Path) -> None:
    c = context(
        **{".*SELECT version_num": Result("0001\n"), "^git .* log ": Result("a1 a1 1700000000\n")}
    )
    target = LocalTarget(c, cfg, socket=True)
    staging = Staging(tmp_path / "staging")
    staging.create()
    facts: list[Facts] = []
    read = target.facts_step(facts.append)
    dump, _pack = target.backup_steps(staging)
    run_all([*read, dump])
    parts = target.restore_steps(staging, schema.plan("0001"), [])
    run_all(parts.database)
    revision, dumped, restore = (cmd for cmd in ran(c) if not cmd.startswith("git "))
    # Each step ran exactly the command its row shows.
    assert read[0].target.endswith(revision) and [dump.target] == [dumped]
    assert [parts.database[0].target] == [restore]
    assert facts[0].schema_revision == "0001"
    as_postgres = re.compile(r"^(runuser -u postgres --|sudo -n -u postgres --) ")
    assert as_postgres.match(revision) and as_postgres.match(dumped)
    assert " -h " not in revision + dumped + restore  # the unix socket
    assert dumped.endswith(f"-p 5432 -U postgres -d desbordante > {staging.database}")
    reader, _, writer = restore.partition(" | ")
    assert "pg_restore --no-owner --no-privileges -f - " in reader  # reads the file as us
    assert as_postgres.match(writer) and 'SET ROLE "desbordante"' in reader


def test_tcp_route_and_missing_tools(cfg: EnvConfig, tmp_path: Path) -> None:
    c = context(**{".*SELECT version_num": Result(stderr="psql: command not found", exited=127)})
    target = LocalTarget(c, cfg, socket=False)
    with pytest.raises(Exit, match=r"client tools are missing; install them"):
        target.schema_revision()
    (revision,) = ran(c)
    assert revision.startswith("psql -X -A -t -q --no-password -h 127.0.0.1 -p 5432 -U postgres")


def test_rows_are_counted_in_the_dump_and_a_strange_count_fails(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    counted = "2\tCOPY public.datasets (id, name) FROM stdin;\n0\tCOPY public.t (x) FROM stdin;\n"
    c = context(**{".*pg_restore --data-only": Result(counted)})
    found: list[dict[str, int]] = []
    (count,) = LocalTarget(c, cfg, socket=False).count_step(tmp_path / "d.dump", found.append)
    assert count.run is not None
    count.run()
    assert ran(c) == [count.target] == [postgres.count_command(str(tmp_path / "d.dump"))]
    assert found == [{"public.datasets": 2, "public.t": 0}]
    c = context(**{".*pg_restore --data-only": Result("x\tnot a COPY line\n")})
    (count,) = LocalTarget(c, cfg, socket=False).count_step(tmp_path / "d.dump", found.append)
    assert count.run is not None
    with pytest.raises(Exit, match="counting the rows of the dump: unexpected line"):
        count.run()


def test_scratch_steps_work_in_the_maintenance_database_and_a_scratch_one(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    c = context(**{r".*SELECT 0, count\(\*\)": Result("0|4\n1|0\n")})
    scratch = Scratch("desbordante", tables=["public.datasets", 'public."Odd Name"'])
    parts = LocalTarget(c, cfg, socket=False).scratch_steps(tmp_path / "d.dump", scratch)
    rows = [s.target for s in [*parts.create, *parts.restore, *parts.count, *parts.drop]]
    assert rows[0] == postgres.sql_command(
        "-h 127.0.0.1 -p 5432 -U postgres -d postgres",
        'CREATE DATABASE "desbordante_verify_XXXXXXXX" TEMPLATE template0',
    )
    assert "-d desbordante_verify_XXXXXXXX" in rows[1] and str(tmp_path / "d.dump") in rows[1]
    assert "SET ROLE" not in rows[1]  # the scratch database is the admin's
    assert rows[3].endswith(
        """-c 'DROP DATABASE IF EXISTS "desbordante_verify_XXXXXXXX" WITH (FORCE)'"""
    )
    run_all([*parts.create, *parts.restore, *parts.count, *parts.drop])
    create, restore, count, drop = ran(c)
    name = scratch.name
    assert re.fullmatch(r"desbordante_verify_[0-9a-f]{8}", name)
    # The real commands are the rows with the chosen name.
    assert [create, restore, drop] == [
        rows[i].replace("desbordante_verify_XXXXXXXX", name) for i in (0, 1, 3)
    ]
    assert f"-d {name} -c " in count and """FROM public."Odd Name" ORDER BY 1""" in count
    assert scratch.counts == {"public.datasets": 4, 'public."Odd Name"': 0}


# --- plans -------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> EnvConfig:
    """The local stack's settings with an uploads directory holding two datasets."""
    uploads = tmp_path / "uploads"
    (uploads / "datasets").mkdir(parents=True)
    (uploads / "datasets" / "a.csv").write_text("x,y\n1,2\n")
    (uploads / "datasets" / "b.csv").write_text("x\n1\n")
    (uploads / "incoming").mkdir()
    (uploads / "incoming" / "part").write_text("not packed")
    flags = {"LOCAL_RUN_DIR": str(tmp_path / "run"), "UPLOADED_FILES_DIR_PATH": str(uploads)}
    return load_config("local", flags=flags, environ={})


def printed(plan: Plan, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, ...]]:
    print_steps(plan, dry_run=True)
    return plan_cells(capsys.readouterr().out)


@pytest.mark.usefixtures("wide_console")
def test_local_backup_plan_names_the_commands_the_files_and_the_archive(
    data: EnvConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MockContext(run={})  # any command fails the test
    before = snapshot(tmp_path)
    out = tmp_path / "backups"
    plan = flow.backup_plan(LocalTarget(c, data, socket=False), out, True, created=CREATED)
    rows = printed(plan, capsys)
    assert commands(c) == [] and snapshot(tmp_path) == before
    name = "desbordante-local-20261126T120000Z.tar"
    staging = out / f".{name}.staging"
    verifying = out / f".{name}.verify"
    revision = postgres.revision_command(TCP)
    assert rows[:7] == [
        ("create", f"directory {out} (mode 0700)"),
        ("create", f"directory {staging} (mode 0700): the members until the archive is written"),
        ("read", f"the checkout's git revision and the schema revision: {revision}"),
        ("run", f"{postgres.dump_command(TCP)} > {staging / DATABASE}"),
        (
            "pack",
            f"uploaded files in {data.uploads_dir} (2 files, 12 bytes; without incoming, .restore) "
            f"into {staging / UPLOADS}",
        ),
        ("run", " ".join(postgres.count_command(str(staging / DATABASE)).split())),
        (
            "write",
            f"{out / name} (mode 0600): archive of database.dump, uploads.tar and manifest.json "
            f"(no secrets); {staging} is removed",
        ),
    ]
    assert [action for action, _ in rows[7:]] == [
        "unpack",
        "run",
        "run",
        "count",
        "run",
        "compare",
    ]
    assert rows[7][1].startswith(f"database.dump of {out / name} into {verifying} ")
    assert (
        "desbordante_verify_XXXXXXXX" in rows[8][1] and "desbordante_verify_XXXXXXXX" in rows[11][1]
    )
    assert rows[12][1].endswith(
        "renames the archive to desbordante-local-20261126T120000Z.unverified.tar)"
    )


@pytest.mark.usefixtures("wide_console")
def test_local_restore_plan_verifies_then_lists_the_steps_and_changes_nothing(
    data: EnvConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / DATABASE).write_bytes(b"PGDMP fake dump")
    (staged / UPLOADS).write_bytes(b"")
    manifest = Manifest(
        env="local", source="t", release="r", schema_revision="0001", created_at="2026-11-26Z"
    )
    path = tmp_path / "a.tar"
    archive.write_archive(path, manifest, {name: staged / name for name in (DATABASE, UPLOADS)})
    c = MockContext(run={})
    before = snapshot(tmp_path)
    plan = flow.restore_plan(LocalTarget(c, data, socket=False), path, interactive=True)
    rows = printed(plan, capsys)
    assert commands(c) == [] and snapshot(tmp_path) == before
    staging = tmp_path / ".a.tar.restore-local"
    dump = str(staging / DATABASE)
    assert rows == [
        ("ask", "type local to confirm (--yes skips it)"),
        (
            "unpack",
            f"the archive's members into {staging} (checksums checked again; removed at the end)",
        ),
        ("skip", "stopping writers: api and worker do not run"),
        ("run", " ".join(postgres.restore_command(TCP, "desbordante", dump).split())),
        (
            "replace",
            f"uploaded files in {data.uploads_dir} (2 files, 12 bytes; without incoming, .restore) "
            f"by {staging / UPLOADS}",
        ),
        ("skip", "migrations: the archive's schema is the code's head"),
    ]
    # An archive of an older toolkit restores; it cannot be verified.
    with pytest.raises(Exit, match=r"^a\.tar records no row counts \(an archive of an older"):
        scratch.verify_plan(LocalTarget(c, data, socket=False), path)
