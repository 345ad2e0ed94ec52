"""The README's Quickstart, run exactly as written on a fresh clone of this repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

pytestmark = pytest.mark.timeout(900)


def quickstart_commands() -> list[str]:
    """The ```bash blocks of the README's Quickstart section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_quickstart_has_the_two_commands() -> None:
    run_stack, run_tests = quickstart_commands()

    assert run_stack.endswith("invoke up")
    assert run_tests == "bash .ci/run"
    assert "python3 -m nox" in (REPO / ".ci" / "run").read_text()


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "desbordante-ops"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    yield target
    if (target / ".venv" / "bin" / "invoke").exists():
        subprocess.run([".venv/bin/invoke", "down"], cwd=target, check=False, timeout=120)
    shutil.rmtree(target, ignore_errors=True)


def test_first_command_leaves_a_working_stack_with_urls(clone: Path) -> None:
    run_stack = quickstart_commands()[0]

    done = subprocess.run(
        ["bash", "-c", run_stack], cwd=clone, capture_output=True, text=True, timeout=800
    )

    errors = "\n".join(line for line in done.stderr.splitlines() if "WARNING: Location" not in line)
    assert done.returncode == 0, done.stdout[-3000:] + errors[-3000:]
    urls = re.findall(r"http://127\.0\.0\.1:\d+[^\s│]*", done.stdout)
    api = next(url for url in urls if url.endswith("/api/v1"))
    base = api.removesuffix("/api/v1")
    assert f"{base}/docs" in urls
    assert httpx.get(f"{base}/health/ready", timeout=10).json()["status"] == "ok"
    assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    assert (clone / ".secrets" / "local" / "FLOWER_PASSWORD").stat().st_mode & 0o777 == 0o600
