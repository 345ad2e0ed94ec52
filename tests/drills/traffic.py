"""Background HTTP traffic with a bounded duration, recording every answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    at: float
    status: int  # 0 when no HTTP answer arrived
    body: Any  # the JSON answer ("" when empty), or the error when no answer arrived


@dataclass
class Traffic:
    """Repeat CALL in a thread until stopped (or MAX_SECONDS / MAX_CALLS), keeping answers."""

    call: Callable[[httpx.Client], httpx.Response]
    client: httpx.Client
    max_seconds: float = 120
    max_calls: int = 5000
    pause: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=self.max_seconds)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_calls):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                response = self.call(self.client)
                body = response.json() if response.content else ""
                self.answers.append(Answer(time.monotonic(), response.status_code, body))
            except httpx.HTTPError as exc:
                self.answers.append(Answer(time.monotonic(), 0, repr(exc)))
            self._stop.wait(self.pause)

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for a in self.answers if a.status == status and a.at >= since)

    def statuses(self) -> set[int]:
        return {a.status for a in self.answers}
