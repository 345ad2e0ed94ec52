"""The one error body of the API, `{"detail": "..."}`, and the error responses routes declare.

Every exception handler answers with `ErrorOut`; every route lists each error status it can
return through `errors(...)`, so the OpenAPI document and the answers agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Seconds a client is asked to wait after a 503 (database or broker unavailable).
RETRY_AFTER_SECONDS = 5


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    detail: str = Field(description="one line: what is wrong (field first) and what to do next")


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

DESCRIPTIONS = {
    400: "Malformed request: the body cannot be read, or its multipart framing is broken",
    404: "No dataset or task with this id",
    409: "Conflicts with the current state: the dataset has queued or running tasks",
    413: "The upload exceeds MAX_UPLOAD_SIZE_BYTES",
    415: "The body is not multipart/form-data with a boundary",
    422: "A parameter, a field or the uploaded file is invalid; `detail` names it first",
    429: "Too many uploads and task creations from this client; retry later",
    503: "A service is unavailable (database, message broker or task queue); retry later",
    507: "Not enough storage space for this upload: UPLOAD_QUOTA_BYTES or the disk is full",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status with `ErrorOut` (and `Retry-After` on 429 and 503)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorOut, "description": DESCRIPTIONS[status]}
        if status in (429, 503):
            entry["headers"] = RETRY_AFTER_HEADER
        documented[status] = entry
    return documented


# What the routes of each kind can answer besides their success status.
READ_ONE = errors(404, 422, 503)
READ_MANY = errors(422, 503)
# Task creation: a JSON body, the per-client rate limit, the queue-depth limit (503).
CREATE_TASK = errors(400, 404, 422, 429, 503)
