"""/health/live and /health/ready"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from kombu import Connection
from pydantic import BaseModel, Field
from sqlalchemy import text

from desbordante_service.api.deps import SettingsDep
from desbordante_service.api.errors import ErrorOut
from desbordante_service.db import get_engine
from desbordante_service.settings import Settings
from desbordante_service.storage import Storage

router = APIRouter(prefix="/health", tags=["health"])

CHECK = "`ok` or `error: <exception>: <message>`"


class Checks(BaseModel):
    database: str = Field(description=CHECK)
    broker: str = Field(description=CHECK)
    storage: str = Field(description=CHECK)


class ReadyOut(Checks):
    status: Literal["ok"]


class NotReadyOut(ErrorOut, Checks):
    """The error shape, with the result of each check."""


class LiveOut(BaseModel):
    status: Literal["ok"]


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


@router.get("/live", summary="The process is up", response_model=LiveOut)
def live() -> LiveOut:
    return LiveOut(status="ok")


@router.get(
    "/ready",
    summary="Database, broker and storage are usable",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "at least one check failed"}},
)
async def ready(settings: SettingsDep) -> ReadyOut | JSONResponse:
    storage = Storage(settings.UPLOADED_FILES_DIR_PATH)
    checks = Checks(
        database=await run_in_threadpool(_check, _database),
        broker=await run_in_threadpool(_check, lambda: _broker(settings)),
        storage=await run_in_threadpool(_check, storage.check_writable),
    )
    failed = [name for name, result in checks.model_dump().items() if result != "ok"]
    if not failed:
        return ReadyOut(status="ok", **checks.model_dump())
    detail = f"not ready: {', '.join(failed)} failed; retry later"
    body = NotReadyOut(detail=detail, **checks.model_dump())
    return JSONResponse(body.model_dump(), status_code=503)
