"""Time that moves only when a wait sleeps, so grace periods and timeouts are testable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Monotonic time that only moves when a wait sleeps."""

    t: float = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
