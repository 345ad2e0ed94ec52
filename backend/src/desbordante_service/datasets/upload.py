"""Streams a multipart upload to disk, enforcing the size cap and the storage room as it goes.

The body is never held in memory: the `file` part goes in ~1 MiB blocks to a `Spool` that
writes, hashes and CSV-checks it in one pass. The client's file name is never used as a path,
and on any failure (limit, quota, malformed body, disconnect, disk full, cancellation) the
partial file is removed.
"""

from __future__ import annotations

import errno
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from desbordante_service.datasets.csvcheck import CsvOutcome
from desbordante_service.datasets.form import parse_separator
from desbordante_service.datasets.spool import Spool
from desbordante_service.errors import Invalid

# Multipart framing and the small form fields around the file may add this much to the body.
ENVELOPE_ALLOWANCE = 64 * 1024
MAX_FIELD_BYTES = 1024
BLOCK = 1024 * 1024  # handed to the spool at once: few, large writes
NO_SPACE = "not enough storage space for this upload"


class UploadError(Exception):
    """The upload was rejected; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Room:
    """What the file may take: the size cap (413), the storage quota's rest and free disk (507)."""

    max_file_bytes: int
    quota_left: int | None = None  # None: no quota
    quota_detail: str = ""  # the 507 answer when the file would not fit into the quota
    free_bytes: int | None = None

    def check(self, file_bytes: int) -> None:
        """Refuse a file of at least FILE_BYTES that cannot fit (before writing anything)."""
        if self.quota_left is not None and file_bytes > self.quota_left:
            raise UploadError(507, self.quota_detail)
        if self.free_bytes is not None and file_bytes > self.free_bytes:
            raise UploadError(507, NO_SPACE)


@dataclass
class ReceivedUpload:
    path: Path
    filename: str = ""
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    check: CsvOutcome | None = None  # the CSV check done while receiving, if one could be
    checked_with: str | None = None  # the separator it assumed


class _Receiver:
    def __init__(self, path: Path, room: Room) -> None:
        self.path = path
        self.room = room
        self.result = ReceivedUpload(path=path)
        self.spool: Spool | None = None
        self.blocks: list[bytes] = []  # full blocks for the spool
        self._parts: list[bytes] = []  # of the next block (a whole chunk is not copied)
        self._part_bytes = 0
        self.file_seen = False
        self.finished = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._field_value = bytearray()
        self._is_file = False

    # multipart callbacks -------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = ""
        self._is_file = False
        self._field_value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if not self._name:
            raise UploadError(422, "a form part has no name; allowed: file, separator, has_header")
        if self._name == "file":
            if self.file_seen:
                raise UploadError(422, "file: only one file may be uploaded")
            self.file_seen = True
            self._is_file = True
            filename = options.get(b"filename", b"").decode("utf-8", "replace")
            self.result.filename = _display_name(filename)
            self.spool = Spool(self.path, _separator(self.result.fields))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.result.size += end - start
            if self.result.size > self.room.max_file_bytes:
                raise UploadError(413, _too_large(self.room.max_file_bytes))
            self.room.check(self.result.size)
            self._parts.append(data[start:end])
            self._part_bytes += end - start
            if self._part_bytes >= BLOCK:
                self._flush()
        else:
            self._field_value += data[start:end]
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise UploadError(422, f"{self._name}: value is too long")

    def _flush(self) -> None:
        if self._parts:
            self.blocks.append(b"".join(self._parts))
            self._parts.clear()
            self._part_bytes = 0

    def on_part_end(self) -> None:
        if self._is_file:
            self._flush()
        elif self._name in self.result.fields:
            raise UploadError(422, f"{self._name}: given more than once")
        else:
            self.result.fields[self._name] = self._field_value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.finished = True

    def callbacks(self) -> dict[str, object]:
        names = (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
            "on_end",
        )
        return {name: getattr(self, name) for name in names}


def _separator(fields: dict[str, str]) -> str | None:
    """The separator to check with while receiving: the form's so far, or the default."""
    try:
        return parse_separator(fields)
    except Invalid:  # reported with the other form errors once the body is complete
        return None


def _display_name(filename: str) -> str:
    """The client's file name without any directory or control character (NUL cannot be stored)."""
    name = Path(filename.replace("\\", "/")).name
    name = "".join(char for char in name if unicodedata.category(char) != "Cc")
    return name[:255] or "dataset.csv"


def _too_large(limit: int) -> str:
    return f"file: the upload exceeds the limit of {limit} bytes (MAX_UPLOAD_SIZE_BYTES)"


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(415, "the body must be multipart/form-data with a `file` part")
    return options[b"boundary"]


async def receive(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
    path: Path,
    room: Room,
) -> ReceivedUpload:
    """Write the `file` part to `path` (hashed and CSV-checked) and collect the form fields."""
    boundary = boundary_of(content_type)
    max_body = room.max_file_bytes + ENVELOPE_ALLOWANCE
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, "invalid Content-Length header") from None
        if declared > max_body:
            raise UploadError(413, _too_large(room.max_file_bytes))
        room.check(declared - ENVELOPE_ALLOWANCE)
    receiver = _Receiver(path, room)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_body:
                raise UploadError(413, _too_large(room.max_file_bytes))
            parser.write(chunk)
            if receiver.blocks:
                assert receiver.spool is not None
                for block in receiver.blocks:
                    await receiver.spool.put(block)
                receiver.blocks.clear()
        if not receiver.finished:
            raise UploadError(400, "the multipart body is incomplete")
        if receiver.spool is None:
            raise UploadError(422, "file: field required")
        spooled = await receiver.spool.finish()
    except OSError as exc:
        discard(receiver, path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError(507, NO_SPACE) from None
        raise
    except ValueError as exc:  # python-multipart reports malformed framing this way
        discard(receiver, path)
        raise UploadError(400, f"malformed multipart body: {exc}") from None
    except BaseException:
        discard(receiver, path)
        raise
    result = receiver.result
    result.sha256 = spooled.sha256
    result.check, result.checked_with = spooled.check, spooled.separator
    return result


def discard(receiver: _Receiver, path: Path) -> None:
    if receiver.spool is not None:
        receiver.spool.abort()
    path.unlink(missing_ok=True)
