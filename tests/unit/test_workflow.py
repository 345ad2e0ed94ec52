"""The GitHub workflow, checked offline: valid for GitHub, and a red test publishes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from desbordante_ops.core.settings import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_workflow_matches_githubs_schema(tmp_path: Path) -> None:
    for path in (REPO_ROOT / ".github" / "workflows").glob("*.y*ml"):
        done = check(path)
        assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert check(broken).returncode != 0  # the check can fail


def test_publishing_needs_the_tests_and_the_plan() -> None:
    publish = jobs()["publish"]
    assert set(publish["needs"]) == {"plan", "test"}
    assert "needs.test.result == 'success'" in publish["if"]
    assert publish["permissions"]["packages"] == "write"
    assert jobs()["test"].get("permissions") is None  # tests never get the package token


def test_the_plan_refuses_bad_refs_before_anything_runs() -> None:
    plan_steps = " ".join(step.get("run", "") for step in jobs()["plan"]["steps"])
    assert 'invoke images.tags --ref "$GITHUB_REF"' in plan_steps
    assert jobs()["test"]["needs"] == ["plan"]


def test_ci_runs_default_sessions_that_exist() -> None:
    steps = " ".join(step.get("run", "") for step in jobs()["test"]["steps"])
    command = next(line for line in steps.splitlines() if "nox -s" in line)
    sessions = command.split("nox -s", 1)[1].split()
    noxfile = (REPO_ROOT / "noxfile.py").read_text()
    for session in sessions:
        assert f"def {session}(session" in noxfile and f'"{session}",' in noxfile, session
    assert "bash .ci/services" in steps  # the same services .ci/run starts
