"""Shared rich output: one status line per step, warnings, tables and progress bars.

Messages are text, never markup: a path or command with `[brackets]` prints as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

console = Console(highlight=False, soft_wrap=False)


def step(msg: str) -> None:
    """Announce one step of work."""
    console.print(f"[bold cyan]→[/] {escape(msg)}")


def ok(msg: str) -> None:
    """Report a step that succeeded (or had nothing to do)."""
    console.print(f"[bold green]✓[/] {escape(msg)}")


def warn(msg: str) -> None:
    """Report something the user should know about; work continues."""
    console.print(f"[bold yellow]![/] {escape(msg)}")


def fail(msg: str) -> None:
    """Report a failed step (the caller decides whether to stop)."""
    console.print(f"[bold red]✗[/] {escape(msg)}")


def make_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A rich table with a header row."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table (final summaries, doctor results, settings)."""
    console.print(make_table(title, columns, rows))


def progress() -> Progress:
    """A progress display for waits: spinner, description, bar, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class Tracker:
    """Progress of several named items: bars on a terminal, one line per change elsewhere.

    (rich draws nothing until the end when its output is not a terminal, so a CI log or a
    pipe would show no progress at all during a long wait.)
    """

    def __init__(self, bar: Progress | None) -> None:
        self._bar = bar
        self._tasks: dict[str, object] = {}
        self._shown: dict[str, str] = {}

    def update(self, key: str, description: str, completed: float, total: float = 1) -> None:
        """Show KEY at COMPLETED of TOTAL with DESCRIPTION."""
        if self._bar is None:
            if self._shown.get(key) != description:
                self._shown[key] = description
                console.print(f"  … {description}", markup=False, highlight=False)
            return
        if key not in self._tasks:
            self._tasks[key] = self._bar.add_task(description, total=total)
        self._bar.update(
            self._tasks[key],  # type: ignore[arg-type]
            description=description,
            completed=completed,
            total=total,
        )


@contextmanager
def tracker() -> Iterator[Tracker]:
    """A Tracker for the duration of the block."""
    if not console.is_terminal:
        yield Tracker(None)
        return
    with progress() as bar:
        yield Tracker(bar)
