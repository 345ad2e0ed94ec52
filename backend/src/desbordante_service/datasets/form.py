"""The upload form's small fields: `separator` and `has_header` (the `file` part aside)."""

from __future__ import annotations

from desbordante_service.errors import Invalid

DEFAULT_SEPARATOR = ","
# PostgreSQL text cannot hold NUL, and the separator is stored with the dataset.
NOT_SEPARATORS = '\r\n"\x00'
# What the document's boolean is sent as in a form; any case ("False" is what Python's str gives).
BOOLEANS = {"true": True, "false": False}


def parse_separator(fields: dict[str, str]) -> str:
    separator = fields.get("separator", DEFAULT_SEPARATOR)
    if len(separator) != 1 or separator in NOT_SEPARATORS:
        raise Invalid(
            "separator: must be exactly one character other than a quote, a newline or NUL"
        )
    return separator


def parse_form(fields: dict[str, str]) -> tuple[str, bool]:
    """Validate the `separator` and `has_header` form fields."""
    unknown = sorted(set(fields) - {"separator", "has_header"})
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown form field; allowed: file, separator, has_header")
    separator = parse_separator(fields)
    has_header = BOOLEANS.get(fields.get("has_header", "true").strip().lower())
    if has_header is None:
        raise Invalid("has_header: must be a boolean: true or false")
    return separator, has_header
