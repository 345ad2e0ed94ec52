"""What a `--dry-run` prints: the actions a task would take, in order, and nothing else.

The tasks that change a server or a registry take `--dry-run`. It reads the real state
(cluster, registry, Docker engine, files) but writes nothing, prints one table headed
DRY_RUN with one row per action and its target (object kind/name/namespace, file path and
mode, command line; never a secret value), and exits 0. The rules every dry run follows:
- input the real run would refuse before touching anything (a bad argument or setting, an
  archive that fails verification) fails the dry run the same way: one line, non-zero;
- state it cannot read (cluster, engine, file unreachable) is a row saying so (`unknown`),
  and so is a state in which the real run would stop (e.g. no local image to push): the plan
  is still printed and the exit status is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from invoke import Exit

from desbordante_ops.core.console import print_table

DRY_RUN = "dry run: nothing is changed"
UNKNOWN = "unknown"
T = TypeVar("T")

# One action of a plan: (action, target), e.g. ("create", "Secret ns/name (keys password)").
Row = tuple[str, str]


def print_plan(
    title: str, rows: Iterable[Sequence[str]], columns: Sequence[str] = ("action", "target")
) -> None:
    """The numbered plan of a dry run under TITLE, headed DRY_RUN."""
    numbered = [(str(number), *row) for number, row in enumerate(rows, 1)]
    print_table(f"{title} ({DRY_RUN})", ("#", *columns), numbered)


def unreadable(what: str, why: str) -> Row:
    """The row of something a dry run could not read (its plan stays printable)."""
    return (UNKNOWN, f"{what}: {why.rstrip('.')}")


def file_row(path: Path, what: str) -> Row:
    """The row of a private file (0600, core/files.py) a run would write: `write` a new one
    or `replace` the one there."""
    try:
        action = "replace" if path.exists() else "write"
    except OSError:  # a directory we may not look into
        action = "write"
    return (action, f"{path} (mode 0600): {what}")


def read_or_row(read: Callable[[], T], what: str) -> tuple[T | None, list[Row]]:
    """(READ(), []) or, when it raises Exit (one line saying why), (None, [unreadable row])."""
    try:
        return read(), []
    except Exit as exc:
        return None, [unreadable(what, str(exc.message))]
