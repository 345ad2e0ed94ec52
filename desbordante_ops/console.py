"""Shared rich output: one status line per step, warnings, tables and progress bars."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
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
    console.print(f"[bold cyan]→[/] {msg}")


def ok(msg: str) -> None:
    """Report a step that succeeded (or had nothing to do)."""
    console.print(f"[bold green]✓[/] {msg}")


def warn(msg: str) -> None:
    """Report something the user should know about; work continues."""
    console.print(f"[bold yellow]![/] {msg}")


def fail(msg: str) -> None:
    """Report a failed step (the caller decides whether to stop)."""
    console.print(f"[bold red]✗[/] {msg}")


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
