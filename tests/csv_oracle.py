"""The CSV check as it was before the one-pass upload (commit c51d936), kept as the test oracle.

The streaming checker in desbordante_service.datasets.csvcheck must give the same answers;
tests/backend/test_csvcheck.py compares the two. Not used by the service. The error and summary
types and the header check (unchanged by the one-pass upload) are the service's own.
"""

from __future__ import annotations

import codecs
import csv
import sys
from itertools import repeat
from pathlib import Path

from desbordante_service.datasets.csvcheck import CsvError, CsvSummary, _header

csv.field_size_limit(sys.maxsize)
BLOCK = 1024 * 1024


def inspect_csv(path: Path, separator: str, has_header: bool) -> CsvSummary:
    """Validate encoding, column count consistency and header; count the data rows."""
    first = _first_record(path, separator)
    width = len(first)
    if width == 0 or (width == 1 and first[0] == ""):
        raise CsvError("the file has no columns: the first line is empty")
    columns = _header(first) if has_header else [str(i) for i in range(width)]
    if width > 1 and _plain(path):
        records = _count_plain(path, separator.encode(), width)
    else:
        records = _count_with_csv(path, separator, width)
    return CsvSummary(columns=columns, row_count=records - 1 if has_header else records)


def _first_record(path: Path, separator: str) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle, delimiter=separator, strict=True), [])
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as exc:
        raise CsvError(f"malformed CSV on line 1: {exc}") from None


def _not_utf8(path: Path) -> CsvError:
    """The error for a file that is not UTF-8, naming the line of the first invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                lines += block.count(b"\n", 0, max(exc.start, 0))
                break
            lines += block.count(b"\n")
    return CsvError(f"the file is not UTF-8 text: invalid bytes on line {lines}")


def _plain(path: Path) -> bool:
    """No quote characters and no bare carriage returns: one record per physical line."""
    with path.open("rb") as handle:
        tail = b""
        while block := handle.read(BLOCK):
            if b'"' in block:
                return False
            window = tail + block
            if window.count(b"\r") != window.count(b"\r\n") + window.endswith(b"\r"):
                return False
            tail = block[-1:]
        return not tail.endswith(b"\r")


def _count_plain(path: Path, separator: bytes, width: int) -> int:
    """Records of a quote-free file, checking every line has `width` columns and is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    records = 0
    pending = b""
    try:
        with path.open("rb") as handle:
            while block := handle.read(BLOCK):
                decoder.decode(block)
                lines = (pending + block).split(b"\n")
                pending = lines.pop()
                _check_lines(lines, separator, width, records)
                records += len(lines)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if pending.rstrip(b"\r"):
        _check_lines([pending], separator, width, records)
        records += 1
    return records


def _check_lines(lines: list[bytes], separator: bytes, width: int, before: int) -> None:
    counts = set(map(bytes.count, lines, repeat(separator)))
    if counts <= {width - 1}:
        return
    for index, line in enumerate(lines):
        found = line.count(separator) + 1 if line.rstrip(b"\r") else 0
        if found != width:
            raise CsvError(f"line {before + index + 1} has {found} columns, expected {width}")


def _count_with_csv(path: Path, separator: str, width: int) -> int:
    records = 0
    line = 0
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator, strict=True)
            for record in reader:
                line = reader.line_num
                if len(record) != width:
                    raise CsvError(f"line {line} has {len(record)} columns, expected {width}")
                records += 1
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as exc:
        raise CsvError(f"malformed CSV after line {line}: {exc}") from None
    return records
