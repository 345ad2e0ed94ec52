"""Label selectors evaluated as the API server does: the one matcher of the test suite.

Terms, comma-separated, all of which must hold: `k=v` and `k==v` (equal), `k!=v` (absent or
different), `k` (present), `!k` (absent), `k in (a,b)` and `k notin (a,b)` (set-based).
An empty selector selects everything. A term the grammar does not allow raises ValueError,
which the fake API server answers with 400 like kube-apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SET_TERM = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")


def _terms(selector: str) -> list[str]:
    """Split on the commas that are not inside a `( ... )` value list."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return [term for term in terms if term]


def _holds(term: str, labels: Mapping[str, str]) -> bool:
    found = _SET_TERM.match(term)
    if found:
        values = {value.strip() for value in found["values"].split(",") if value.strip()}
        present = found["key"] in labels and labels[found["key"]] in values
        return present if found["op"] == "in" else not present
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return labels.get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return key in labels and labels[key] == value
    if term.startswith("!"):
        return term[1:].strip() not in labels
    if re.search(r"[\s()]", term):
        raise ValueError(f"unable to parse requirement: {term!r}")
    return term in labels


def matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    """True when LABELS satisfy every term of SELECTOR (ValueError for a malformed term)."""
    have = labels or {}
    return all(_holds(term, have) for term in _terms(selector or ""))
