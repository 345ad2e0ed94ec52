"""Results of one benchmark: a rich table on screen, JSON under results/ (git-ignored)."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from desbordante_ops.core.console import console, print_table
from desbordante_ops.core.settings import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Check:
    """One target: what it asks, what was measured, whether it is met (None: not measured)."""

    target: str
    measured: str
    met: bool | None


@dataclass
class Result:
    name: str
    columns: list[str]
    rows: list[list[str]]
    checks: list[Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""


def verdict(met: bool | None) -> str:
    return {True: "[green]met[/]", False: "[red]not met[/]", None: "[yellow]n/a[/]"}[met]


def show(result: Result) -> Path:
    """Print RESULT and write results/<name>.json; return the JSON path."""
    if result.skipped:
        console.print(f"[yellow]{result.name}: skipped: {result.skipped}[/]")
    if result.rows:
        print_table(result.name, result.columns, result.rows)
    if result.checks:
        print_table(
            f"{result.name}: targets",
            ("target", "measured", "verdict"),
            [(c.target, c.measured, verdict(c.met)) for c in result.checks],
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{result.name}.json"
    payload = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        **asdict(result),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    console.print(f"[dim]wrote {path.relative_to(REPO_ROOT)}[/]")
    return path
