"""Plans: what a task that changes something will do, as data, and the one executor of them.

Every task that changes a server, a registry or this machine first does its reads, then builds
a `Plan`: a title and an ordered list of `Step`s. Each step has an action and a target (object
kind/namespace/name, file path and mode, command line; never a secret value) and, when it does
something, `run`. `execute(plan, dry_run)` prints the numbered table (headed DRY_RUN for a dry
run) and, unless it is a dry run, runs the steps in order, reporting each. The dry run is
therefore the plan the real run executes, built from the same reads.

The rules every plan follows:
- input the real run would refuse before touching anything (a bad argument or setting, an
  archive that fails verification) raises Exit while the plan is built: one line, non-zero,
  in a dry run too;
- state that cannot be read is a row saying so (`unknown`), and so is a state in which the
  real run would stop (no local image to push, a missing Secret): such a step carries `stop`.
  The dry run prints the plan and exits 0; the real run prints it and stops with that line
  before it runs any step;
- a step whose outcome depends on an earlier one that a dry run cannot know (a Job's result,
  who holds a lock by then) says so in its target;
- a step may carry `check`: its write sent as a server-side dry run (`dryRun=All`), so that in
  a dry run the server checks admission, RBAC and schema without keeping anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from invoke import Exit
from rich.markup import escape

from desbordante_ops.core.console import console, fail, print_table, step

DRY_RUN = "dry run: nothing is changed"
UNKNOWN = "unknown"
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One row of a plan: ACTION on TARGET, done by RUN (None: nothing to do, a row only).

    CHECK sends the same write as a server-side dry run (only in a dry run). STOP: the real
    run refuses here, before any step runs, with this line (a dry run shows the row and exits 0).
    """

    action: str
    target: str
    run: Callable[[], object] | None = field(default=None, compare=False)
    check: Callable[[], object] | None = field(default=None, compare=False)
    stop: str = ""

    @property
    def row(self) -> tuple[str, str]:
        return (self.action, self.target)


@dataclass
class Plan:
    """What a task will do: TITLE, the STEPS in order, and PREFACE lines printed above the
    table (e.g. the diff of what changes). COLUMNS name the two cells of each row."""

    title: str
    steps: list[Step]
    preface: list[str] = field(default_factory=list)
    columns: tuple[str, str] = ("action", "target")

    @property
    def rows(self) -> list[tuple[str, str]]:
        return [s.row for s in self.steps]


def note(action: str, target: str) -> Step:
    """A row that does nothing itself (a check that passed, something kept)."""
    return Step(action, target)


def unknown(what: str, why: str) -> Step:
    """The row of something that could not be read; the real run stops there."""
    text = f"{what}: {why.rstrip('.')}"
    return Step(UNKNOWN, text, stop=f"Cannot go on: {text}.")


def refused(action: str, target: str, why: str) -> Step:
    """A row where the real run would stop (WHY: one line saying what to do)."""
    return Step(action, target, stop=why)


def file_step(path: Path, what: str, run: Callable[[], object] | None = None) -> Step:
    """The step writing a private file (0600, core/files.py): `write` a new one or `replace`
    the one there."""
    try:
        action = "replace" if path.exists() else "write"
    except OSError:  # a directory we may not look into
        action = "write"
    return Step(action, f"{path} (mode 0600): {what}", run)


def read_or_step(read: Callable[[], T], what: str) -> tuple[T | None, list[Step]]:
    """(READ(), []) or, when it raises Exit (one line saying why), (None, [the unknown row])."""
    try:
        return read(), []
    except Exit as exc:
        return None, [unknown(what, str(exc.message))]


@dataclass(frozen=True)
class Seen:
    """What one `execute` did, for tests: the rows it printed, the rows of the steps that do
    something (RUNNABLE) and those it ran (RAN: all of them, unless a step failed)."""

    title: str
    dry_run: bool
    rows: list[tuple[str, str]]
    runnable: list[tuple[str, str]]
    ran: list[tuple[str, str]]


_watchers: list[list[Seen]] = []


@contextmanager
def watching() -> Iterator[list[Seen]]:
    """Collect a `Seen` for every plan executed inside the block (tests)."""
    seen: list[Seen] = []
    _watchers.append(seen)
    try:
        yield seen
    finally:
        _watchers.remove(seen)


def print_steps(plan: Plan, dry_run: bool) -> None:
    """The numbered table of PLAN (headed DRY_RUN for a dry run), after its preface."""
    for line in plan.preface:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    numbered = [(str(number), *map(escape, s.row)) for number, s in enumerate(plan.steps, 1)]
    title = f"{plan.title} ({DRY_RUN})" if dry_run else plan.title
    print_table(escape(title), ("#", *plan.columns), numbered)


def _server_checks(plan: Plan) -> None:
    """A dry run's server-side checks; one Exit listing the steps the server would refuse."""
    refusals = []
    for number, item in enumerate(plan.steps, 1):
        if item.check is None:
            continue
        try:
            item.check()
        except Exit as exc:
            fail(f"{number}. {item.action} {item.target}: {exc.message}")
            refusals.append(str(number))
    if refusals:
        raise Exit(f"The server would refuse step(s) {', '.join(refusals)} (see above).")


def execute(plan: Plan, dry_run: bool = False) -> list[Step]:
    """Print PLAN; unless DRY_RUN, run its steps in order. Returns the steps that ran."""
    ran: list[Step] = []
    try:
        print_steps(plan, dry_run)
        if dry_run:
            _server_checks(plan)
            return ran
        stopped = next((s for s in plan.steps if s.stop), None)
        if stopped is not None:
            raise Exit(stopped.stop)
        total = len(plan.steps)
        for number, item in enumerate(plan.steps, 1):
            if item.run is None:
                continue
            step(f"[{number}/{total}] {item.action}: {item.target}")
            ran.append(item)
            item.run()
        return ran
    finally:
        for seen in _watchers:
            seen.append(
                Seen(plan.title, dry_run, plan.rows, runnable(plan.steps), [s.row for s in ran])
            )


def runnable(steps: Sequence[Step]) -> list[tuple[str, str]]:
    """The rows of STEPS that do something (what a real run executes)."""
    return [s.row for s in steps if s.run is not None]
