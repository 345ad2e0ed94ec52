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
MAX_EXAMPLES = 300  # per operation and phase, per seed
TIME_BOUND_SECONDS = 240  # one schemathesis run (one seed); beyond it the test fails


def schemathesis_command(
    api_url: str, report_dir: Path, extra: list[str], seed: int | None = None
) -> list[str]:
    """`schemathesis run` with every check; SEED makes the run reproducible (else EXTRA does)."""
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
    if seed is not None:
        command.append(f"--seed={seed}")
    elif not any(arg.startswith("--seed") for arg in extra):
        command.append("--generation-deterministic")
    return [*command, *extra]


def test_every_generated_request_gets_a_documented_answer(
    stack: Stack, st_args: list[str], seed: int | None, tmp_path: Path
) -> None:
    """Schemathesis with every check finds no failure within a fixed example count and time.

    Once per seed (conftest.SEEDS, or --st-seeds), against the same stack.
    """
    environ = {
        **stack.environ,
        "SCHEMATHESIS_HOOKS": "hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    started = time.monotonic()
    try:
        result = run(
            schemathesis_command(stack.api_url, tmp_path, st_args, seed),
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
    name = f"seed {seed}" if seed is not None else "seed from --st-args"
    SUMMARY[name] = [*lines[start:], f"wall time of the run: {time.monotonic() - started:.1f}s"]
    assert result.returncode == 0, "\n".join(lines[-300:])
