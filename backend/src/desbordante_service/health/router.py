"""/health/live and /health/ready"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from kombu import Connection
from sqlalchemy import text

from desbordante_service.api.deps import SettingsDep
from desbordante_service.db import get_engine
from desbordante_service.settings import Settings
from desbordante_service.storage import Storage

router = APIRouter(prefix="/health", tags=["health"])


def _database() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker(settings: Settings) -> None:
    with Connection(settings.broker_url, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1, timeout=3)


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"


@router.get("/live", summary="The process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Database, broker and storage are usable")
async def ready(settings: SettingsDep) -> JSONResponse:
    storage = Storage(settings.UPLOADED_FILES_DIR_PATH)
    checks = {
        "database": await run_in_threadpool(_check, _database),
        "broker": await run_in_threadpool(_check, lambda: _broker(settings)),
        "storage": await run_in_threadpool(_check, storage.check_writable),
    }
    if all(result == "ok" for result in checks.values()):
        return JSONResponse({"status": "ok", **checks})
    return JSONResponse({"detail": checks}, status_code=503)
