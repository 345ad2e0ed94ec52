"""Checks a CSV file the way Desbordante will read it, in one pass over a stream of blocks.

`scan` pulls the file's bytes block by block (from the upload being received, or from a stored
file) and keeps only a partial line between blocks. Lines without quotes and bare carriage
returns (the common case) are checked by a fast path that strips every byte but separators and
line ends with `bytes.translate` and compares the rest with the expected pattern; from the first
line with a quote or a bare carriage return on, the `csv` module reads the rest. Both give the
same answers. The first record (the header) is always read the way the `csv` module reads it.

Which error is reported when a file has several: invalid UTF-8 bytes anywhere win (the line of
the first one); otherwise the first error in file order, a file that ends inside a UTF-8
character counting as an error on its last line found before that line's columns are checked.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

csv.field_size_limit(sys.maxsize)
BLOCK = 1024 * 1024
_BARE_CR = re.compile(rb"\r(?!\n)")
_CR = ord("\r")
_CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8 bytes that only continue a character


class CsvError(ValueError):
    """The file is not a usable CSV; the message says where and why."""


class _Invalid(Exception):
    """Invalid UTF-8 bytes were found: the structure no longer matters."""


@dataclass(frozen=True)
class CsvSummary:
    columns: list[str]
    row_count: int


@dataclass(frozen=True)
class CsvOutcome:
    """What a scan found, before `has_header` is applied (it may arrive after the file)."""

    first: list[str]
    records: int
    head_error: str | None = None
    body_error: str | None = None
    bad_line: int | None = None

    def summary(self, has_header: bool) -> CsvSummary:
        """The columns and row count; `CsvError` with the message of the error that counts."""
        if self.bad_line is not None:
            raise CsvError(_not_utf8(self.bad_line))
        if self.head_error is not None:
            raise CsvError(self.head_error)
        columns = _header(self.first) if has_header else [str(i) for i in range(len(self.first))]
        if self.body_error is not None:
            raise CsvError(self.body_error)
        rows = self.records - 1 if has_header else self.records
        return CsvSummary(columns=columns, row_count=rows)


def inspect_csv(path: Path, separator: str, has_header: bool) -> CsvSummary:
    """Validate encoding, column count consistency and header; count the data rows."""
    return scan(read_blocks(path), separator).summary(has_header)


def read_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            yield block


def scan(blocks: Iterable[bytes], separator: str, *, fast: bool = True) -> CsvOutcome:
    """Check the file made of BLOCKS (any split) with SEPARATOR; consumes every block.

    `fast=False` reads every line with the `csv` module (the tests compare both paths).
    """
    return _Scanner(blocks, separator, fast).run()


def _not_utf8(line: int) -> str:
    return f"the file is not UTF-8 text: invalid bytes on line {line}"


def _header(record: list[str]) -> list[str]:
    names = [name.strip() for name in record]
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            raise CsvError(f"line 1: column {position} has an empty name")
        if "\x00" in name:  # column names are stored in PostgreSQL, whose text cannot hold NUL
            raise CsvError(f"line 1: column {position} has a NUL character in its name")
        if name in seen:
            raise CsvError(f"line 1: duplicate column name {name!r}")
        seen.add(name)
    return names


@dataclass
class _Pending:
    """The fast path's partial line at the end of a block, kept as counts (constant memory)."""

    separators: int = 0
    content: bool = False  # any byte other than a final carriage return
    field: bool = False  # the field after the last separator is not empty
    cr: bool = False  # ends with a carriage return (a CRLF split between blocks, or bare)


class _Scanner:
    def __init__(self, blocks: Iterable[bytes], separator: str, fast: bool) -> None:
        self._blocks = iter(blocks)
        self._separator = separator
        self._sep = separator.encode()
        self._fast = fast and len(self._sep) == 1
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._partial = False  # the UTF-8 check holds the first bytes of a character
        self._uncounted: bytes | None = None  # the last block pulled, its newlines not counted
        self._newlines = 0
        self._ended = False
        self._bad_line: int | None = None
        self._in_head = True
        self._first: list[str] = []
        self._records = 0
        self._pending = _Pending()
        self._unit = self._unit_crlf = b""  # a well-formed line's marks, set by the fast path
        keep = {*self._sep, *b'\n\r"'}  # the fast path strips every other byte
        self._strip = bytes(b for b in range(256) if b not in keep)

    def run(self) -> CsvOutcome:
        head_error = body_error = None
        try:
            self._scan()
        except _Invalid:
            pass
        except CsvError as exc:
            if self._in_head:
                head_error = str(exc)
            else:
                body_error = str(exc)
        self._drain()
        return CsvOutcome(self._first, self._records, head_error, body_error, self._bad_line)

    # blocks ------------------------------------------------------------------------
    def _pull(self) -> bytes | None:
        """The next block, checked to be UTF-8 so far; None at the end of the file."""
        if self._uncounted is not None:
            self._newlines += self._uncounted.count(b"\n")
            self._uncounted = None
        if self._ended:
            return None
        block = next(self._blocks, None)
        while block is not None and not block:
            block = next(self._blocks, None)
        if block is None:
            self._ended = True
            if self._partial:
                raise CsvError(_not_utf8(self._newlines + 1))
            return None
        if self._partial or not block.isascii():
            held = len(self._utf8.getstate()[0])
            try:
                self._utf8.decode(block)
            except UnicodeDecodeError as exc:
                position = max(exc.start - held, 0)
                self._bad_line = self._newlines + block.count(b"\n", 0, position) + 1
                self._ended = True
                raise _Invalid from None
            self._partial = bool(self._utf8.getstate()[0])
        self._uncounted = block
        return block

    def _counted(self, newlines: int) -> None:
        """The caller counted the newlines of the block pulled last."""
        self._newlines += newlines
        self._uncounted = None

    def _drain(self) -> None:
        """Pull the rest after an error: invalid UTF-8 later in the file still wins."""
        while True:
            try:
                if self._pull() is None:
                    return
            except (_Invalid, CsvError):
                return

    # first record ------------------------------------------------------------------
    def _scan(self) -> None:
        buffer = bytearray()
        while b"\n" not in buffer and buffer.find(b"\r", 0, len(buffer) - 1) < 0:
            block = self._pull()  # up to the end of the first line, no further (like readline)
            if block is None:
                break
            buffer += block
        end = buffer.find(b"\n") + 1 or len(buffer)
        line = bytes(buffer[:end])
        if b'"' in line or line.count(b"\r") != line.endswith(b"\r\n"):
            self._csv("", bytes(buffer), lines_before=0)
            return
        self._read_first(self._reader([line.decode()]))
        rest = bytes(buffer[end:])
        if self._fast and len(self._first) > 1:
            self._plain(rest)
        else:
            self._csv("", rest, lines_before=1)

    def _reader(self, lines: Iterable[str]) -> CsvReader:
        return csv.reader(lines, delimiter=self._separator, strict=True)

    def _read_first(self, reader: CsvReader) -> None:
        try:
            first: list[str] = next(reader, [])
            self._first = first
        except csv.Error as exc:
            raise CsvError(f"malformed CSV on line 1: {exc}") from None
        if not first or (len(first) == 1 and first[0] == ""):
            raise CsvError("the file has no columns: the first line is empty")
        self._records = 1
        self._in_head = False

    # fast path: lines without quotes and bare carriage returns ----------------------
    def _plain(self, block: bytes) -> None:
        width = len(self._first)
        self._unit = self._sep * (width - 1) + b"\n"
        self._unit_crlf = self._sep * (width - 1) + b"\r\n"
        counted = True  # the rest of the first line's block: counted when the next is pulled
        while True:
            handover = self._plain_block(block, counted)
            if handover is not None:
                self._csv(*handover, lines_before=self._records)
                return
            pulled = self._pull()
            if pulled is None:
                break
            block, counted = pulled, False
        pending = self._pending
        if pending.cr:  # the file ends with a bare carriage return
            self._csv(self._synthetic(), b"", lines_before=self._records)
        elif pending.content:
            if pending.separators != width - 1:
                self._column_error(self._records + 1, pending.separators + 1)
            self._records += 1

    def _plain_block(self, block: bytes, counted: bool) -> tuple[str, bytes] | None:
        """Check the block's lines; from a quote or bare CR on: (text before it, the rest)."""
        marks = block.translate(None, self._strip)
        cut = self._first_unplain(block, marks)
        if cut < 0:
            newlines = self._plain_lines(block, marks)
            if not counted:
                self._counted(newlines)
            return None
        if not counted:
            self._counted(marks.count(b"\n"))
        start = block.rfind(b"\n", 0, cut) + 1
        if start:
            self._plain_lines(block[:start], marks=None)
            return "", block[start:]
        # The pending line goes on: its synthetic stand-in replaces the end of its character.
        return self._synthetic(), block.lstrip(_CONTINUATION)

    def _first_unplain(self, block: bytes, marks: bytes) -> int:
        """Offset of the first quote or bare carriage return in BLOCK, -1 if none."""
        if self._pending.cr and not block.startswith(b"\n"):
            return 0
        cut = block.find(b'"') if b'"' in marks else -1
        if b"\r" in marks:
            final_cr = block.endswith(b"\r")
            if marks.count(b"\r") - final_cr != block.count(b"\r\n"):
                bare = _BARE_CR.search(block, 0, len(block) - final_cr)
                if bare is not None and (cut < 0 or bare.start() < cut):
                    cut = bare.start()
        return cut

    def _plain_lines(self, block: bytes, marks: bytes | None) -> int:
        """Check the complete lines of a block without quotes and bare CRs, keep the rest;
        the number of line feeds in the block."""
        if marks is None:
            marks = block.translate(None, self._strip)
        pending = self._pending
        first = marks.find(b"\n")
        if first < 0:
            self._extend_pending(block, marks)
            return 0
        width = len(self._first)
        separators = pending.separators + first - (first > 0 and marks[first - 1] == _CR)
        if separators != width - 1:
            empty = not pending.content and not block[: block.find(b"\n")].strip(b"\r")
            self._column_error(self._records + 1, 0 if empty else separators + 1)
        last = marks.rfind(b"\n")
        lines = self._middle_lines(marks, first, last)
        if lines is None:
            self._bad_middle_line(block)
        self._records += lines + 1
        tail = block[block.rfind(b"\n") + 1 :]
        self._pending = _Pending()
        self._extend_pending(tail, marks[last + 1 :])
        return lines + 1

    def _extend_pending(self, part: bytes, marks: bytes) -> None:
        pending = self._pending
        cr = part.endswith(b"\r")
        pending.separators += len(marks) - marks.count(b"\r")
        last_separator = part.rfind(self._sep)
        if last_separator >= 0:
            pending.field = len(part) - last_separator - 1 - cr > 0
        else:
            pending.field = pending.field or len(part) > cr
        pending.content = pending.content or len(part) > cr
        pending.cr = cr

    def _middle_lines(self, marks: bytes, first: int, last: int) -> int | None:
        """How many lines marks[first+1:last+1] holds if all are well-formed, else None."""
        for unit in (self._unit, self._unit_crlf):
            lines, rest = divmod(last - first, len(unit))
            if not rest and marks.startswith(unit * lines, first + 1):
                return lines
        mixed = marks[first + 1 : last + 1].replace(b"\r", b"")  # LF and CRLF lines mixed
        lines = mixed.count(b"\n")
        return lines if mixed == self._unit * lines else None

    def _bad_middle_line(self, block: bytes) -> NoReturn:
        """Raise the error of the first wrong line between the block's first and last LF."""
        width = len(self._first)
        middle = block[block.find(b"\n") + 1 : block.rfind(b"\n")].split(b"\n")
        for index, line in enumerate(middle):
            found = line.count(self._sep) + 1 if line.rstrip(b"\r") else 0
            if found != width:
                self._column_error(self._records + 2 + index, found)
        raise AssertionError("the marks differ, so some line must")

    def _synthetic(self) -> str:
        """Text that leaves the `csv` module in the state the pending partial line would."""
        pending = self._pending
        filler = "b" if self._separator == "a" else "a"
        return (
            self._separator * pending.separators
            + (filler if pending.field else "")
            + ("\r" if pending.cr else "")
        )

    def _column_error(self, line: int, found: int) -> NoReturn:
        raise CsvError(f"line {line} has {found} columns, expected {len(self._first)}")

    # csv module path ---------------------------------------------------------------
    def _csv(self, prefix: str, data: bytes, lines_before: int) -> None:
        """Read the rest with the `csv` module: PREFIX, then DATA, then the blocks to come."""
        reader = self._reader(chain.from_iterable(self._lines(prefix, data)))
        if self._in_head:
            self._read_first(reader)
        width = len(self._first)
        records = self._records
        line = reader.line_num  # of the last good record (before LINES_BEFORE)
        try:
            for record in reader:
                line = reader.line_num
                if len(record) != width:
                    self._column_error(lines_before + line, len(record))
                records += 1
        except csv.Error as exc:
            raise CsvError(f"malformed CSV after line {lines_before + line}: {exc}") from None
        self._records = records

    def _lines(self, prefix: str, data: bytes) -> Iterator[Iterable[str]]:
        """Lines split like a text file opened with newline="" (at LF, CR and CRLF)."""
        held = [prefix.encode()]  # a partial line, joined once it ends (no quadratic copy)
        block: bytes | None = data
        while block is not None:
            end = _line_end(block)  # cut there, the text is whole characters
            if end >= 0:
                yield _text(b"".join((*held, memoryview(block)[: end + 1])))
                held = [block[end + 1 :]]
            else:  # a CR that ends what is held may now be followed by a whole character
                tail = _last_bytes(held, 4)
                end = _line_end(tail + block[:4])
                held.append(block)
                if end >= 0:
                    joined = b"".join(held)
                    cut = len(joined) - len(block) - len(tail) + end + 1
                    yield _text(joined[:cut])
                    held = [joined[cut:]]
            block = self._pull()
        yield _text(b"".join(held))  # whole characters: a cut one ended the file in `_pull`


def _line_end(block: bytes) -> int:
    """Offset of the last line end in BLOCK known to be one, -1 if none: an LF, or a CR
    followed by a whole character (else it may be half of a CRLF, like for `readline`)."""
    lf = block.rfind(b"\n")
    cr = block.rfind(b"\r", lf + 1)
    while cr > lf and not _whole_character(block, cr + 1):
        cr = block.rfind(b"\r", lf + 1, cr)
    return max(lf, cr)


def _last_bytes(parts: list[bytes], count: int) -> bytes:
    tail = b""
    for part in reversed(parts):
        if len(tail) >= count:
            break
        tail = part[len(tail) - count :] + tail
    return tail


def _whole_character(block: bytes, start: int) -> bool:
    """Whether a whole UTF-8 character begins at START (the block is valid UTF-8 so far)."""
    if start >= len(block):
        return False
    lead = block[start]
    size = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return len(block) - start >= size


def _text(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
