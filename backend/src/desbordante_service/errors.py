"""Domain errors; the API maps each to an HTTP status with `{"detail": ...}`."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400

    def __init__(
        self, detail: str, headers: dict[str, str] | None = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        if retry_after is not None:  # the client may simply try again after this many seconds
            self.headers["Retry-After"] = str(retry_after)


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class TooManyRequests(ServiceError):
    status = 429


class Unavailable(ServiceError):
    """503; the API adds `Retry-After` unless `headers` carries one."""

    status = 503
