"""Schemathesis hooks of the contract run (loaded through SCHEMATHESIS_HOOKS).

The upload's `file` part is documented as CSV text (a string with `contentMediaType: text/csv`,
sent as UTF-8), its CSV rules in prose: JSON Schema cannot say "every record has as many fields
as the first". So a request schemathesis generates as valid gets, instead of arbitrary text, a
CSV shaped by that text that follows the documented rules for the generated `separator` and
`has_header`; the server must accept it (201).

A request generated as invalid must be invalid as the server receives it. In a multipart form
every value is text: schemathesis 4.32.5 sends `true`, `0`, `null` or `[null, null]` generated
for the string `file` as those texts, which the schema admits (and an empty list as no part).
It reads query, path, header and cookie parameters back from their wire form before calling a
case invalid, but not form fields. So `filter_case` builds the very request schemathesis sends
for an upload generated as invalid (through its own transport), splits the body into its parts,
reads them as the schema reads a form (text; a boolean `true` or `false` in any case; each field
once) and drops the case when the published schema admits that: it would claim that the server
accepts invalid data when it was sent valid data. Every other invalid upload is sent as
generated, and cases invalid through anything but the form (Content-Type probes, headers) are
never dropped.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import requests
import schemathesis
from python_multipart.multipart import MultipartParser, parse_options_header
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, coverage_scenario

UPLOAD = ("POST", "/api/v1/datasets")
FORM = "multipart/form-data"
BASE_URL = "http://contract.invalid"  # only to build a request that is never sent
NAMES = "abcdefgh"  # header names: non-empty and unique; the separator is skipped
BOOLEANS = {"true": True, "false": False}  # a form boolean, in any case (the schema says so)


def valid_csv(seed: str, separator: str, has_header: bool) -> str:
    """A CSV the documented rules accept with these form fields; its shape comes from `seed`."""
    banned = {separator, '"', "\r", "\n"}
    filler = next(char for char in "01" if char != separator)
    text = "".join(char for char in seed if char not in banned)
    width = 1 + len(seed) % 3
    cells = [text[start : start + 3] for start in range(0, len(text), 3)] or [filler]
    cells += [filler] * (-len(cells) % width)
    rows = [cells[start : start + width] for start in range(0, len(cells), width)]
    if has_header:
        rows.insert(0, [name for name in NAMES if name != separator][:width])
    newline = "\r\n" if len(seed) % 2 else "\n"
    return "".join(separator.join(row) + newline for row in rows)


def sent_parts(case) -> list[tuple[str, bytes]] | None:
    """(name, content) of each part of the multipart body schemathesis sends for CASE."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        files=kwargs.get("files"),
        data=kwargs.get("data"),
    ).prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    kind, options = parse_options_header(prepared.headers.get("Content-Type", ""))
    if kind != FORM.encode() or not options.get(b"boundary") or not isinstance(body, bytes):
        return None
    parts: list[tuple[str, bytes]] = []
    part: dict[str, Any] = {}

    def begin() -> None:
        part.update(field=b"", value=b"", disposition=b"", data=[])

    def header_end() -> None:
        if part["field"].lower() == b"content-disposition":
            part["disposition"] = part["value"]
        part.update(field=b"", value=b"")

    def end() -> None:
        _, params = parse_options_header(part["disposition"])
        parts.append((params.get(b"name", b"").decode("utf-8", "replace"), b"".join(part["data"])))

    callbacks: Any = {
        "on_part_begin": begin,
        "on_header_field": lambda d, a, b: part.update(field=part["field"] + d[a:b]),
        "on_header_value": lambda d, a, b: part.update(value=part["value"] + d[a:b]),
        "on_header_end": header_end,
        "on_part_data": lambda d, a, b: part["data"].append(d[a:b]),
        "on_part_end": end,
    }
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)
        parser.write(body)
        parser.finalize()
    except ValueError:  # python-multipart's parse errors
        return None
    return parts


def as_received(parts: list[tuple[str, bytes]], schema: dict[str, Any]) -> dict[str, Any] | None:
    """The form the server reads from PARTS, typed as the schema reads a form; None if no form.

    Every part is text (UTF-8); a field sent more than once is not one value; a boolean
    property reads `true`/`false` in any case.
    """
    properties = schema.get("properties", {})
    form: dict[str, Any] = {}
    for name, content in parts:
        if name in form:
            return None
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if properties.get(name, {}).get("type") == "boolean":
            form[name] = BOOLEANS.get(text.strip().lower(), text)
        else:
            form[name] = text
    return form


def _form_schema(operation) -> dict[str, Any] | None:
    for body in operation.body:
        if body.media_type == FORM:
            return body.resolved_schema
    return None


def _is_upload(context, case) -> bool:
    operation = context.operation
    return (
        operation is not None
        and (operation.method.upper(), operation.path) == UPLOAD
        and case.meta is not None
        and isinstance(case.body, dict)
    )


def _invalid_only_in_the_body(case) -> bool:
    """Generated as invalid through its form alone (not a header, method or Content-Type probe)."""
    components = case.meta.components
    body = components.get(ParameterLocation.BODY)
    return (
        body is not None
        and not body.mode.is_positive
        and all(
            info.mode.is_positive
            for where, info in components.items()
            if where != ParameterLocation.BODY
        )
        and coverage_scenario(case) not in REQUEST_SHAPE_PROBES
    )


@schemathesis.hook
def filter_case(context, case) -> bool:
    """Drop uploads generated as invalid that are valid as sent (see above)."""
    if not _is_upload(context, case) or not _invalid_only_in_the_body(case):
        return True
    schema = _form_schema(context.operation)
    if schema is None:
        return True
    parts = sent_parts(case)
    received = None if parts is None else as_received(parts, schema)
    return received is None or not jsonschema_rs.validator_for(schema).is_valid(received)


@schemathesis.hook
def map_case(context, case):
    """Uploads generated as valid carry a valid CSV (see above); the others are left alone."""
    if not _is_upload(context, case) or not case.meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(seed := body.get("file"), str):
        body["file"] = valid_csv(seed, body.get("separator", ","), body.get("has_header", True))
    return case
