"""The FastAPI application: routers per domain and JSON errors `{"detail": ...}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from desbordante_service import __version__
from desbordante_service.api.ratelimit import ClientRateLimit
from desbordante_service.datasets.router import router as datasets_router
from desbordante_service.datasets.upload import UploadError
from desbordante_service.errors import ServiceError
from desbordante_service.health.router import router as health_router
from desbordante_service.profiling.router import router as tasks_router
from desbordante_service.settings import get_settings
from desbordante_service.storage import Storage

log = logging.getLogger(__name__)


def _location(loc: tuple) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    return JSONResponse({"detail": f"{_location(first['loc'])}: {first['msg']}"}, status_code=422)


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
    if exc.connection_invalidated or "connect" in str(exc.orig).lower():
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return JSONResponse({"detail": "the database is unavailable; retry later"}, 503)
    raise exc


async def _broker_error(_: Request, exc: BrokerError) -> JSONResponse:
    log.warning("broker unavailable: %s", exc)
    return JSONResponse({"detail": "the message broker is unavailable; retry later"}, 503)


def create_app() -> FastAPI:
    settings = get_settings()
    Storage(settings.UPLOADED_FILES_DIR_PATH).ensure()
    app = FastAPI(
        title="Desbordante profiling service",
        version=__version__,
        description="Upload a CSV dataset, create a profiling task, poll it for the result.",
    )
    app.state.rate_limit = ClientRateLimit(settings.RATE_LIMIT_PER_MINUTE)
    app.include_router(health_router)
    app.include_router(datasets_router, prefix="/api/v1")
    app.include_router(tasks_router, prefix="/api/v1")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(BrokerError, _broker_error)
    return app
