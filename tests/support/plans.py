"""Reading what a `--dry-run` printed, and proving it changed no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from desbordante_ops.core import console
from desbordante_ops.core.plan import DRY_RUN


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table rows on one line each (rich folds cells at 80 columns when not on a terminal)."""
    monkeypatch.setattr(console.console, "width", 1000)


def plan_lines(out: str) -> list[str]:
    """The rows of the dry run's plan table in OUT as `│ # │ action │ target │`, single-spaced
    (the table under the last title saying DRY_RUN; other tables before it are skipped)."""
    lines = out.splitlines()
    titles = [i for i, line in enumerate(lines) if f"({DRY_RUN})" in line]
    assert titles, f"no plan table in:\n{out}"
    body = lines[titles[-1] :]
    return [" ".join(line.split()) for line in body if line.startswith("│")]


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ROOT with its mode and content (None for directories)."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mode,
            None if path.is_dir() else path.read_bytes(),
        )
        for path in sorted(root.rglob("*"))
    }


def plan_cells(out: str) -> list[tuple[str, ...]]:
    """The rows of the plan table in OUT as their cells after the number: (action, target)."""
    rows = [line.strip("│").split("│") for line in plan_lines(out)]
    return [tuple(" ".join(cell.split()) for cell in row[1:]) for row in rows]
