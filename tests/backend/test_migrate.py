"""`migrate` builds the schema, is idempotent, and is safe when runs overlap."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys


def test_concurrent_migrate_runs_are_safe(scratch_database: dict[str, str], connect) -> None:
    command = [sys.executable, "-m", "desbordante_service", "migrate"]
    env = {**os.environ, **scratch_database}
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]

    assert [run.returncode for run in runs] == [0, 0, 0, 0], [err for _, err in outputs]
    stdout = sorted(out.strip() for out, _ in outputs)
    assert stdout == [
        "migrate: already at revision 0001",
        "migrate: already at revision 0001",
        "migrate: already at revision 0001",
        "migrate: upgraded from an empty database to 0001",
    ]
    with connect(scratch_database) as connection:
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    assert versions == [("0001",)]
    assert tables == [("alembic_version",), ("datasets",), ("profiling_tasks",)]


def test_check_reports_an_outdated_schema(scratch_database: dict[str, str]) -> None:
    command = [sys.executable, "-m", "desbordante_service", "migrate", "--check"]
    env = {**os.environ, **scratch_database}

    before = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    subprocess.run(command[:-1], env=env, capture_output=True, check=True)
    after = subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    assert before.returncode == 1
    assert "not at the latest revision" in before.stderr
    assert after.returncode == 0


def test_failure_is_one_clear_line(scratch_database: dict[str, str]) -> None:
    env = {**os.environ, **scratch_database, "POSTGRES_USER": "no_such_role"}

    result = subprocess.run(
        [sys.executable, "-m", "desbordante_service", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("migrate: failed: ")
    assert 'role "no_such_role" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_check_waits_until_the_schema_is_current(scratch_database: dict[str, str]) -> None:
    env = {**os.environ, **scratch_database}
    command = [sys.executable, "-m", "desbordante_service", "migrate"]

    waiting = subprocess.Popen(
        [*command, "--check", "--wait", "120"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with contextlib.suppress(subprocess.TimeoutExpired):
        waiting.wait(timeout=4)  # long enough for a first check of the empty database
    assert waiting.poll() is None, "migrate --check --wait gave up on an outdated schema"
    subprocess.run(command, env=env, capture_output=True, check=True, timeout=120)
    out, _ = waiting.communicate(timeout=130)

    assert waiting.returncode == 0
    assert out.strip() == "migrate: the database schema is up to date"
