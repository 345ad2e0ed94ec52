"""The one polling helper: call a check until it says done, a time limit, or a fatal state.

Built on tenacity (fixed interval; stop after a delay or as many attempts as fit in it):
every wait of the toolkit goes through `poll`, so each is bounded in time and in count, and
the sleep can be replaced in tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def poll(
    check: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    interval: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call CHECK every INTERVAL seconds until DONE(result) or TIMEOUT; return the last result.

    The caller decides what a last result that is not done means (usually: Exit with why).
    """
    retrying = Retrying(
        retry=retry_if_result(lambda result: not done(result)),
        wait=wait_fixed(interval),
        # Bounded in time and in count (the count also bounds tests that replace SLEEP).
        stop=stop_after_delay(timeout) | stop_after_attempt(math.ceil(timeout / interval) + 1),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(check)
    except RetryError as error:
        return error.last_attempt.result()
