"""The upload form's small fields: `separator` and `has_header` (the `file` part aside)."""

from __future__ import annotations

from desbordante_service.errors import Invalid

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}
DEFAULT_SEPARATOR = ","


def parse_separator(fields: dict[str, str]) -> str:
    separator = fields.get("separator", DEFAULT_SEPARATOR)
    if len(separator) != 1 or separator in '\r\n"':
        raise Invalid("separator: must be exactly one character other than a quote or newline")
    return separator


def parse_form(fields: dict[str, str]) -> tuple[str, bool]:
    """Validate the `separator` and `has_header` form fields."""
    unknown = sorted(set(fields) - {"separator", "has_header"})
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown form field; allowed: file, separator, has_header")
    separator = parse_separator(fields)
    raw = fields.get("has_header", "true").strip().lower()
    if raw not in TRUE | FALSE:
        raise Invalid("has_header: must be a boolean (true or false)")
    return separator, raw in TRUE
