"""Checks a stored CSV file the way Desbordante will read it."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

csv.field_size_limit(sys.maxsize)


class CsvError(ValueError):
    """The file is not a usable CSV; the message says where and why."""


@dataclass(frozen=True)
class CsvSummary:
    columns: list[str]
    row_count: int


def inspect_csv(path: Path, separator: str, has_header: bool) -> CsvSummary:
    """Validate encoding, column count consistency and header; count the data rows."""
    width = 0
    rows = 0
    columns: list[str] = []
    line = 0
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator, strict=True)
            for record in reader:
                line = reader.line_num
                if not width:
                    width = len(record)
                    if width == 0 or (width == 1 and record[0] == ""):
                        raise CsvError("the file has no columns: the first line is empty")
                    if has_header:
                        columns = _header(record)
                        continue
                    columns = [str(i) for i in range(width)]
                elif len(record) != width:
                    raise CsvError(
                        f"line {reader.line_num} has {len(record)} columns, expected {width}"
                    )
                rows += 1
    except UnicodeDecodeError:
        raise CsvError(f"the file is not UTF-8 text: invalid bytes after line {line}") from None
    except csv.Error as exc:
        raise CsvError(f"malformed CSV after line {line}: {exc}") from None
    if not width:
        raise CsvError("the file is empty")
    return CsvSummary(columns=columns, row_count=rows)


def _header(record: list[str]) -> list[str]:
    names = [name.strip() for name in record]
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            raise CsvError(f"line 1: column {position} has an empty name")
        if name in seen:
            raise CsvError(f"line 1: duplicate column name {name!r}")
        seen.add(name)
    return names
