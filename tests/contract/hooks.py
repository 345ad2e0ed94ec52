"""Schemathesis hooks of the contract run (loaded through SCHEMATHESIS_HOOKS).

The upload's `file` part is documented as binary with its CSV rules in prose: JSON Schema cannot
say "every record has as many fields as the first". So a request schemathesis generates as
valid gets, instead of arbitrary bytes, a CSV shaped by those bytes that follows the documented
rules for the generated `separator` and `has_header`; the server must accept it (201).

A request generated as invalid keeps its bytes, as text: schemathesis 4.32.5 checks whether an
invalid form is still valid as sent (an empty list sends no part at all), but its validator
raises on its own wrapper for binary values, and it then reports such a request as accepted
invalid data.
"""

from __future__ import annotations

import schemathesis

UPLOAD = ("POST", "/api/v1/datasets")
NAMES = "abcdefgh"  # header names: non-empty and unique; the separator is skipped


def valid_csv(seed: bytes, separator: str, has_header: bool) -> bytes:
    """A CSV the documented rules accept with these form fields; its shape comes from `seed`."""
    banned = {separator, '"', "\r", "\n"}
    filler = next(char for char in "01" if char != separator)
    text = "".join(char for char in seed.decode("utf-8", "replace") if char not in banned)
    width = 1 + len(seed) % 3
    cells = [text[start : start + 3] for start in range(0, len(text), 3)] or [filler]
    cells += [filler] * (-len(cells) % width)
    rows = [cells[start : start + width] for start in range(0, len(cells), width)]
    if has_header:
        rows.insert(0, [name for name in NAMES if name != separator][:width])
    newline = "\r\n" if len(seed) % 2 else "\n"
    return "".join(separator.join(row) + newline for row in rows).encode("utf-8")


def _as_bytes(value: object) -> bytes | None:
    data = getattr(value, "data", value)  # schemathesis wraps generated binary values
    return data if isinstance(data, bytes) else None


@schemathesis.hook
def map_case(context, case):
    """Uploads: valid ones carry a valid CSV, invalid ones their bytes as text (see above)."""
    operation = context.operation
    body = case.body
    if (
        operation is None
        or (operation.method.upper(), operation.path) != UPLOAD
        or case.meta is None
        or not isinstance(body, dict)
        or (seed := _as_bytes(body.get("file"))) is None
    ):
        return case
    if case.meta.generation.mode.is_positive:
        body["file"] = valid_csv(seed, body.get("separator", ","), body.get("has_header", True))
    else:
        body["file"] = seed.decode("utf-8", "replace")
    return case
