"""The local stack's backup commands on both admin routes (MockContext; the TCP route runs for
real in tests/integration/test_backup_local.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import commands

from desbordante_ops.backup.local import LocalTarget
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
