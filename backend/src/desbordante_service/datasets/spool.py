"""Writes an upload's file part to disk in a worker thread, hashing and CSV-checking it on the way.

The event loop hands over blocks of about 1 MiB through a bounded queue (memory stays constant)
and goes on receiving while the worker writes, hashes and checks; the disk write and SHA-256
release the GIL, so the two overlap. The file is read by nobody afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from desbordante_service.datasets.csvcheck import CsvOutcome, scan

DEPTH = 4  # blocks queued at most
JOIN_SECONDS = 10.0


@dataclass(frozen=True)
class Spooled:
    size: int
    sha256: str
    check: CsvOutcome | None  # None when no usable separator was known when the file began
    separator: str | None  # the separator `check` used


class Spool:
    """One file part being written. Create it on the event loop, then `put`, `finish`/`abort`."""

    def __init__(self, path: Path, separator: str | None) -> None:
        self._file = path.open("xb")
        self._separator = separator
        self._size = 0
        self._digest = hashlib.sha256()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(DEPTH)
        self._loop = asyncio.get_running_loop()
        self._done: concurrent.futures.Future[Spooled] = concurrent.futures.Future()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="upload-spool", daemon=True)
        self._thread.start()

    async def put(self, block: bytes) -> None:
        """Queue a block; waits while DEPTH blocks are queued; raises the worker's error."""
        await self._slots.acquire()
        if self._done.done():
            self._done.result()  # the worker failed (disk full): raise its error here
        self._queue.put(block)

    async def finish(self) -> Spooled:
        """Wait until everything is written and checked; the file is closed afterwards."""
        self._queue.put(None)
        return await asyncio.wrap_future(self._done)

    def abort(self) -> None:
        """Drop what is not written yet and wait (briefly) for the worker to close the file."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=JOIN_SECONDS)

    # worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        self._done.set_running_or_notify_cancel()  # from now on, cancelling it is a no-op
        try:
            with self._file:
                blocks = self._written()
                check = None if self._separator is None else scan(blocks, self._separator)
                for _ in blocks:  # the check reads to the end; without one, write the rest
                    pass
            self._done.set_result(
                Spooled(self._size, self._digest.hexdigest(), check, self._separator)
            )
        except BaseException as exc:
            self._done.set_exception(exc)
            for _ in range(DEPTH):  # wake a `put` waiting for a slot: it raises the error
                self._release()

    def _written(self) -> Iterator[bytes]:
        while (block := self._queue.get()) is not None:
            self._release()
            if self._stopping:
                continue
            self._file.write(block)
            self._digest.update(block)
            self._size += len(block)
            yield block

    def _release(self) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._slots.release)
