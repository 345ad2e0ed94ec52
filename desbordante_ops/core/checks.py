"""Host and cluster checks: a list of `Check` objects, run and shown as a table with fixes.

The areas build their own lists (local stack, image tooling, a cluster) from these pieces;
`invoke doctor` and `invoke up` show them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from invoke import Exit

from desbordante_ops.core.console import print_table


@dataclass(frozen=True)
class Result:
    """Outcome of one check; FIX overrides the check's generic advice. UNCHECKED: the check
    could not look (e.g. no right to read it): shown as such, not counted as a failure."""

    ok: bool
    detail: str
    fix: str = ""
    unchecked: bool = False


@dataclass(frozen=True)
class Check:
    """One check: NAME, whether it is REQUIRED, RUN() -> Result and generic FIX advice."""

    name: str
    run: Callable[[], Result]
    fix: str
    required: bool = True


@dataclass
class Report:
    """Results of a list of checks, in order."""

    rows: list[tuple[Check, Result]] = field(default_factory=list)

    @property
    def failed_required(self) -> list[Check]:
        return [
            check
            for check, result in self.rows
            if check.required and not result.ok and not result.unchecked
        ]


def _guard(check: Check) -> Result:
    try:
        return check.run()
    except Exit as exc:
        return Result(False, str(exc.message))
    except Exception as exc:  # a check must report, never crash the doctor
        return Result(False, f"{type(exc).__name__}: {exc}")


def run_checks(checks: Iterable[Check]) -> Report:
    """Run every check (exceptions become failures)."""
    report = Report()
    for check in checks:
        report.rows.append((check, _guard(check)))
    return report


def _result_cell(check: Check, result: Result) -> str:
    if result.ok:
        return f"[green]ok[/] {result.detail}"
    if result.unchecked:
        return f"[yellow]not checked:[/] {result.detail.removeprefix('not checked: ')}"
    label = "[red]FAIL[/]" if check.required else "[yellow]missing[/] (optional)"
    return f"{label} {result.detail}"


def print_report(report: Report, title: str = "doctor") -> None:
    """The table: check, result, how to fix (only for failures)."""
    rows = [
        (
            check.name,
            _result_cell(check, result),
            "" if result.ok or result.unchecked else (result.fix or check.fix),
        )
        for check, result in report.rows
    ]
    print_table(title, ("check", "result", "how to fix"), rows)


def ensure(report: Report) -> None:
    """Exit non-zero when a required check failed."""
    failed = report.failed_required
    if failed:
        names = ", ".join(check.name for check in failed)
        raise Exit(
            f"Required check(s) failed: {names}. Fix them as shown in the table, then retry."
        )


def check_and_report(checks: Iterable[Check], title: str) -> Report:
    """Run, show and enforce CHECKS."""
    report = run_checks(checks)
    print_report(report, title)
    ensure(report)
    return report
