"""Steps of one plan that share a fate: what a failure of any of them leaves, and what is done
once the last of them ran.

`execute` (core/plan.py) runs a plan's steps one after the other. A backup, a restore and a
verification hold things across several of their steps (a staging directory, a helper Job,
stopped writers, a scratch database): `watch` wraps the runs of such steps, so that when one
raises, the error becomes the one line the task ends with (after cleaning up), and what
follows the last of them (cleaning up, the closing line) happens right after it. The rows of
the steps stay as they are: the plan a dry run prints is still the one the real run executes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from desbordante_ops.core.plan import Step


def passes(error: BaseException) -> BaseException:
    """The `failed` of steps whose errors need no other words: the error itself."""
    return error


def watch(
    steps: Sequence[Step],
    failed: Callable[[BaseException], BaseException] = passes,
    before: Callable[[], None] | None = None,
    after: Callable[[], None] | None = None,
) -> list[Step]:
    """STEPS with their runs watched: BEFORE() ahead of each run, AFTER() once the last of
    them ran; when a run raises, FAILED(error) cleans up and gives what to raise instead."""
    runnable = [number for number, item in enumerate(steps) if item.run is not None]
    last = runnable[-1] if runnable else -1
    return [
        _watched(item, failed, before, after if number == last else None)
        for number, item in enumerate(steps)
    ]


def _watched(
    item: Step,
    failed: Callable[[BaseException], BaseException],
    before: Callable[[], None] | None,
    after: Callable[[], None] | None,
) -> Step:
    run = item.run
    if run is None:
        return item

    def go() -> None:
        try:
            if before is not None:
                before()
            run()
        except BaseException as error:  # KeyboardInterrupt too: it leaves a state to tell
            instead = failed(error)
            if instead is error:
                raise
            raise instead from None
        if after is not None:
            after()

    return replace(item, run=go)
