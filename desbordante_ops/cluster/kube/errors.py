"""API and transport errors of the Kubernetes client, each turned into one short line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Exit
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError
from websocket import WebSocketException

FORBIDDEN = 403  # what the API answers when RBAC denies a request
NOT_FOUND = 404
CONFLICT = 409
INVALID = 422
# What a dropped or refused connection to the API server raises: HTTP errors (ApiException,
# urllib3), the exec websocket (websocket-client) and the socket/TLS layer (OSError, incl.
# SSLEOFError and TimeoutError).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    HTTPError,
    WebSocketException,
    OSError,
)
_MAX_DETAIL = 200


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an API error (None for a transport error)."""
    return exc.status if isinstance(exc, ApiException) else None


def describe_error(exc: BaseException) -> str:
    """One short line for a transport or API error: never a response body, headers or URL."""
    if isinstance(exc, ApiException):
        reason = " ".join(str(exc.reason or "").split())
        text = f"HTTP {exc.status} {reason}" if exc.status else f"connection failed: {reason}"
    else:
        detail = " ".join(str(exc).split())
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Turn a transport/API error inside the block into Exit("ACTION failed: <reason>.")."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise Exit(f"{action} failed: {describe_error(exc)}.") from None
