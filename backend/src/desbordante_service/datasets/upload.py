"""Streams a multipart upload straight to disk, enforcing the size cap on the running count.

The body is never held in memory, the client's file name is never used as a path, and on any
failure (limit, malformed body, disconnect, disk full, cancellation) the partial file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

# Multipart framing and the small form fields around the file may add this much to the body.
ENVELOPE_ALLOWANCE = 64 * 1024
MAX_FIELD_BYTES = 1024


class UploadError(Exception):
    """The upload was rejected; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class ReceivedUpload:
    path: Path
    filename: str = ""
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    def __init__(self, path: Path, max_file_bytes: int) -> None:
        self.path = path
        self.max_file_bytes = max_file_bytes
        self.result = ReceivedUpload(path=path)
        self.digest = hashlib.sha256()
        self.file: BinaryIO | None = None
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
            self.file = self.path.open("xb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            assert self.file is not None
            self.result.size += len(chunk)
            if self.result.size > self.max_file_bytes:
                raise UploadError(413, _too_large(self.max_file_bytes))
            self.digest.update(chunk)
            self.file.write(chunk)
        else:
            self._field_value += chunk
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise UploadError(422, f"{self._name}: value is too long")

    def on_part_end(self) -> None:
        if self._is_file:
            assert self.file is not None
            self.file.close()
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
    max_file_bytes: int,
) -> ReceivedUpload:
    """Write the `file` part to `path` and collect the small form fields."""
    boundary = boundary_of(content_type)
    max_body = max_file_bytes + ENVELOPE_ALLOWANCE
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, "invalid Content-Length header") from None
        if declared > max_body:
            raise UploadError(413, _too_large(max_file_bytes))
    receiver = _Receiver(path, max_file_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_body:
                raise UploadError(413, _too_large(max_file_bytes))
            parser.write(chunk)
        if not receiver.finished:
            raise UploadError(400, "the multipart body is incomplete")
        if not receiver.file_seen:
            raise UploadError(422, "file: field required")
    except OSError as exc:
        discard(receiver, path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError(507, "not enough storage space for this upload") from None
        raise
    except ValueError as exc:  # python-multipart reports malformed framing this way
        discard(receiver, path)
        raise UploadError(400, f"malformed multipart body: {exc}") from None
    except BaseException:
        discard(receiver, path)
        raise
    receiver.result.sha256 = receiver.digest.hexdigest()
    return receiver.result


def discard(receiver: _Receiver, path: Path) -> None:
    if receiver.file is not None and not receiver.file.closed:
        receiver.file.close()
    path.unlink(missing_ok=True)
