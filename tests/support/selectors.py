"""Label selectors evaluated as the API server does (equality `k=v` and existence `k` terms)."""

from __future__ import annotations


def matches(selector: str, labels: dict[str, str]) -> bool:
    """True when LABELS satisfy every comma-separated term of SELECTOR."""
    for term in selector.split(","):
        key, eq, value = term.partition("=")
        if (eq and labels.get(key) != value) or (not eq and key not in labels):
            return False
    return True
