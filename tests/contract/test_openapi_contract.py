"""The API keeps its published contract: schemathesis, driven by /openapi.json, all checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import SUMMARY
from .stack import Stack, run

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 300  # per operation and phase; with --generation-deterministic a fixed run
TIME_BOUND_SECONDS = 240  # the whole schemathesis run; beyond it the test fails


def schemathesis_command(api_url: str, report_dir: Path, extra: list[str]) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{api_url}/openapi.json",
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES}",
        "--workers=1",
        "--request-timeout=30",
        "--no-color",
        "--report=junit",
        f"--report-dir={report_dir}",
    ]
    if not any(arg.startswith("--seed") for arg in extra):
        command.append("--generation-deterministic")
    return [*command, *extra]


def test_every_generated_request_gets_a_documented_answer(
    stack: Stack, st_args: list[str], tmp_path: Path
) -> None:
    """Schemathesis with every check finds no failure within a fixed example count and time."""
    environ = {
        **stack.environ,
        "SCHEMATHESIS_HOOKS": "hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    started = time.monotonic()
    try:
        result = run(
            schemathesis_command(stack.api_url, tmp_path, st_args),
            environ,
            TIME_BOUND_SECONDS,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"schemathesis did not finish within {TIME_BOUND_SECONDS}s: lower --max-examples "
            "or find the slow operation in the output above"
        ) from exc
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output, encoding="utf-8")
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if " SUMMARY " in line), len(lines))
    SUMMARY[:] = [*lines[start:], f"wall time of the run: {time.monotonic() - started:.1f}s"]
    assert result.returncode == 0, "\n".join(lines[-300:])
