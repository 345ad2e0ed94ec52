"""The FastAPI application: routers per domain, `{"detail": ...}` errors, the OpenAPI document."""

from __future__ import annotations

from fastapi import FastAPI

from desbordante_service import __version__
from desbordante_service.api import handlers, openapi
from desbordante_service.api.ratelimit import ClientRateLimit
from desbordante_service.datasets.router import router as datasets_router
from desbordante_service.health.router import router as health_router
from desbordante_service.profiling.router import router as tasks_router
from desbordante_service.settings import get_settings
from desbordante_service.storage import Storage

DESCRIPTION = (
    "Upload a CSV dataset, create a profiling task, poll it for the result.\n\n"
    'Every error answers `{"detail": "<one line>"}` (schema `ErrorOut`) with the status listed '
    "for the operation; a 503 carries `Retry-After`. A method a path does not serve is 405 with "
    "an `Allow` header; OPTIONS answers 204 with that header."
)


def create_app() -> FastAPI:
    settings = get_settings()
    Storage(settings.UPLOADED_FILES_DIR_PATH).ensure()
    app = FastAPI(
        title="Desbordante profiling service",
        version=__version__,
        description=f"{DESCRIPTION}\n\n{openapi.limits(settings)}",
    )
    app.state.rate_limit = ClientRateLimit(settings.RATE_LIMIT_PER_MINUTE)
    app.include_router(health_router)
    app.include_router(datasets_router, prefix="/api/v1")
    app.include_router(tasks_router, prefix="/api/v1")
    handlers.install(app)
    openapi.install(app, settings)
    return app
