"""The local stack's backup commands on both admin routes (MockContext; the TCP route runs for
real in tests/integration/test_backup_local.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import commands
from support.plans import plan_cells, snapshot

from desbordante_ops.backup import archive, flow, postgres
from desbordante_ops.backup.archive import DATABASE, UPLOADS, Manifest
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.core.plan import print_plan
from desbordante_ops.core.settings import EnvConfig, load_config


@pytest.fixture
def cfg(tmp_path: Path) -> EnvConfig:
    return load_config("local", flags={"LOCAL_RUN_DIR": str(tmp_path / "run")}, environ={})


def context(**answers: Result) -> MockContext:
    return MockContext(
        run={re.compile(pattern): result for pattern, result in answers.items()}
        | {re.compile("sudo -n true"): Result(), re.compile(".*"): Result()},
        repeat=True,
    )


def test_socket_route_runs_the_clients_as_the_postgres_user(cfg: EnvConfig, tmp_path: Path) -> None:
    c = context(**{".*SELECT version_num": Result("0001\n")})
    target = LocalTarget(c, cfg, socket=True)
    assert target.schema_revision() == "0001"
    target.dump_database(tmp_path / "d.dump")
    target.restore_database(tmp_path / "d.dump")
    revision, dump, restore = [cmd for cmd in commands(c) if "sudo -n true" not in cmd]
    as_postgres = re.compile(r"^(runuser -u postgres --|sudo -n -u postgres --) ")
    assert as_postgres.match(revision) and as_postgres.match(dump)
    assert " -h " not in revision + dump + restore  # the unix socket
    assert dump.endswith(f"-p 5432 -U postgres -d desbordante > {tmp_path / 'd.dump'}")
    reader, _, writer = restore.partition(" | ")
    assert "pg_restore --no-owner --no-privileges -f - " in reader  # reads the file as us
    assert as_postgres.match(writer) and 'SET ROLE "desbordante"' in reader


def test_tcp_route_and_missing_tools(cfg: EnvConfig, tmp_path: Path) -> None:
    c = context(**{".*SELECT version_num": Result(stderr="psql: command not found", exited=127)})
    target = LocalTarget(c, cfg, socket=False)
    with pytest.raises(Exit, match=r"client tools are missing; install them"):
        target.schema_revision()
    (revision,) = commands(c)
    assert revision.startswith("psql -X -A -t -q --no-password -h 127.0.0.1 -p 5432 -U postgres")


# --- dry runs ----------------------------------------------------------------------------------


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


def planned(
    rows: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> list[tuple[str, ...]]:
    print_plan("test", rows)
    return plan_cells(capsys.readouterr().out)


@pytest.mark.usefixtures("wide_console")
def test_local_backup_dry_run_names_the_dump_command_the_files_and_the_archive(
    data: EnvConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MockContext(run={})  # any command fails the test
    before = snapshot(tmp_path)
    out = tmp_path / "backups"
    rows = planned(flow.backup_plan(LocalTarget(c, data, socket=False), out), capsys)
    assert commands(c) == [] and snapshot(tmp_path) == before
    connect = "-h 127.0.0.1 -p 5432 -U postgres -d desbordante"
    staging = out / ".backup-XXXXXXXX"
    assert rows[:3] == [
        ("create", f"directory {out} (mode 0700)"),
        ("run", f"{postgres.dump_command(connect)} > {staging / DATABASE}"),
        (
            "pack",
            f"uploaded files in {data.uploads_dir} (2 files, 12 bytes; without incoming, .restore)",
        ),
    ]
    assert rows[3][0] == "write" and rows[3][1].startswith(f"{out}/desbordante-local-")


@pytest.mark.usefixtures("wide_console")
def test_local_restore_dry_run_verifies_then_lists_the_steps_and_changes_nothing(
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
    rows = planned(flow.restore_plan(LocalTarget(c, data, socket=False), path), capsys)
    assert commands(c) == [] and snapshot(tmp_path) == before
    connect = "-h 127.0.0.1 -p 5432 -U postgres -d desbordante"
    dump = str(tmp_path / ".restore-XXXXXXXX" / DATABASE)
    assert rows == [
        ("ask", "type local to confirm (--yes skips it)"),
        (
            "unpack",
            f"the archive's members into {tmp_path / '.restore-XXXXXXXX'} (removed afterwards)",
        ),
        ("skip", "stopping writers: api and worker do not run"),
        ("run", " ".join(postgres.restore_command(connect, "desbordante", dump).split())),
        (
            "replace",
            f"uploaded files in {data.uploads_dir} (2 files, 12 bytes; without incoming, .restore) "
            "by uploads.tar",
        ),
        ("skip", "migrations: the archive's schema is the code's head"),
    ]
