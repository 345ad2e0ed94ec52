"""Domain errors; the API maps each to an HTTP status with `{"detail": ...}`."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # Sent as `Retry-After` (seconds) when the client may simply try again later.
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503
