"""Progress of long backup steps: a command whose output file grows, and reads of big files.

Both show the bytes done so far on the shared tracker (bars on a terminal, one line per change
in a log). The command runs in a worker thread through the Invoke context; the main thread
watches its output file with `poll` (bounded by the command's own timeout).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO

from invoke import Context, Exit, Result
from invoke.exceptions import CommandTimedOut
from rich.filesize import decimal

from desbordante_ops.core.console import Tracker, tracker
from desbordante_ops.core.poll import poll
from desbordante_ops.core.shell import attempt

WATCH_SECONDS = 0.5
# At most one progress update per this many seconds (a log gets one line per update).
REPORT_SECONDS = 2.0


def size_of(path: Path) -> int:
    """Size of PATH in bytes (0 while it does not exist)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_watched(
    c: Context, command: str, label: str, timeout: float, watch: Path | None = None
) -> Result:
    """Run COMMAND (output hidden, never our stdin) while showing how big WATCH has grown (or,
    without WATCH, for how long it has run).

    Returns the Result (warn=True: the caller decides what a failure means); Exit when the
    command runs longer than TIMEOUT seconds.
    """

    def go() -> Result:
        return attempt(c, command, timeout=timeout)

    def so_far(started: float) -> str:
        return decimal(size_of(watch)) if watch else f"{time.monotonic() - started:.0f}s"

    with ThreadPoolExecutor(max_workers=1) as pool, tracker() as track:
        started = time.monotonic()
        future = pool.submit(go)
        shown = [0.0]

        def check() -> bool:
            now = time.monotonic()
            if now - shown[0] >= REPORT_SECONDS:
                shown[0] = now
                track.update(label, f"{label}: {so_far(started)}", 0)
            return future.done()

        def pause(seconds: float) -> None:
            """Between checks, wait for the command itself: once it is done, no longer."""
            wait([future], seconds)

        poll(check, bool, timeout + 10, WATCH_SECONDS, sleep=pause)
        try:
            result = future.result()
        except CommandTimedOut:
            raise Exit(f"{label} took longer than {timeout:.0f}s and was stopped.") from None
        track.update(label, f"{label}: {so_far(started)}, done", 1)
    return result


class Meter:
    """A readable file that hashes (sha256) and reports what is read through it.

    tarfile reads members through it when it writes or copies them, so one pass over the data
    gives both the checksum and the progress.
    """

    def __init__(self, source: IO[bytes], total: int, label: str, track: Tracker) -> None:
        self.source = source
        self.total = max(total, 1)
        self.label = label
        self.track = track
        self.done = 0
        self.digest = hashlib.sha256()
        self._shown = 0.0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.digest.update(chunk)
        self.done += len(chunk)
        now = time.monotonic()
        if not chunk or now - self._shown >= REPORT_SECONDS or self.done >= self.total:
            self._shown = now
            self.show()
        return chunk

    def show(self) -> None:
        """Report the bytes read so far."""
        self.track.update(
            self.label,
            f"{self.label}: {decimal(self.done)} of {decimal(self.total)}",
            min(self.done, self.total),
            self.total,
        )

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()
