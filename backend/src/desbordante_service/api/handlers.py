"""Exception handlers: every error, ours or the framework's, answers `ErrorOut` JSON."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from desbordante_service.api.errors import RETRY_AFTER_SECONDS, ErrorOut
from desbordante_service.datasets.upload import UploadError
from desbordante_service.errors import ServiceError

log = logging.getLogger(__name__)


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one error answer; a 503 always says when to retry."""
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse(ErrorOut(detail=detail).model_dump(), status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    return error_response(422, f"{_location(first['loc'])}: {first['msg']}")


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.detail, exc.headers)


async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
    return error_response(exc.status, exc.detail)


async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
    if exc.connection_invalidated or "connect" in str(exc.orig).lower():
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return error_response(503, "the database is unavailable; retry later")
    raise exc


async def _broker_error(_: Request, exc: BrokerError) -> JSONResponse:
    log.warning("broker unavailable: %s", exc)
    return error_response(503, "the message broker is unavailable; retry later")


# Methods a route may serve; OPTIONS is answered here for every path.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches at this path (routes are per method), plus OPTIONS.

    Asks the routes themselves (`matches` on the scope with each method), so nested routers
    count too; Starlette's own `Allow` names only the methods of the first route on the path.
    """
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return [*allowed, "OPTIONS"]


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Framework errors (unknown path, body not readable, wrong method) in the same shape.

    A method a path does not serve is 405 with an `Allow` header naming all the methods of the
    path; OPTIONS answers 204 with that header.
    """
    if exc.status_code != 405:
        return error_response(exc.status_code, str(exc.detail), exc.headers)
    allow = ", ".join(allowed_methods(request))
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    detail = f"method {request.method} is not allowed on {request.url.path}; allowed: {allow}"
    return error_response(405, detail, {"Allow": allow})


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """Unexpected failures: still the error shape (the traceback goes to the server log)."""
    return error_response(500, "internal server error; the API log has the details")


def install(app: FastAPI) -> None:
    # Registered through FastAPI's decorator: Starlette's `add_exception_handler` types every
    # handler as taking any Exception, so a handler of one exception class would not type-check.
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(ServiceError)(_service_error)
    app.exception_handler(UploadError)(_upload_error)
    app.exception_handler(DBAPIError)(_database_error)
    app.exception_handler(BrokerError)(_broker_error)
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(Exception)(_internal_error)
