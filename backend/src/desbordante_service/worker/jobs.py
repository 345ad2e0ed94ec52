"""Celery jobs: each takes a profiling task id and calls the profiling service."""

from __future__ import annotations

import logging
import uuid

from billiard.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request

from desbordante_service.db import session_scope
from desbordante_service.profiling import service
from desbordante_service.settings import get_settings
from desbordante_service.storage import Storage
from desbordante_service.worker.app import JOB_NAME, get_celery

log = logging.getLogger(__name__)


class ProfilingRequest(Request):
    """Runs in the worker's main process: records hard time limits, which kill the child."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        message = service.TIME_LIMIT_MESSAGE.format(seconds=int(timeout))
        try:
            with session_scope() as session:
                service.fail_if_running(session, uuid.UUID(self.id), message)
        except Exception:
            log.exception("could not record the time limit of task %s", self.id)


def _is_time_limit(exc: BaseException) -> bool:
    return isinstance(exc, SoftTimeLimitExceeded)


@get_celery().task(name=JOB_NAME, Request=ProfilingRequest)
def profile(task_id: str) -> str | None:
    """Run one profiling task by id."""
    storage = Storage(get_settings().UPLOADED_FILES_DIR_PATH)
    with session_scope() as session:
        status = service.execute(session, storage, uuid.UUID(task_id), is_time_limit=_is_time_limit)
    return status.value if status else None
