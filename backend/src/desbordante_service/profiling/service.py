"""Profiling task logic: create and enqueue, read, long-poll, and execute (in a worker).

Each execution claims the task by bumping `attempts`; only the latest claim may record the
outcome, and a task that already finished is never recomputed or overwritten, so redelivery
(e.g. after a worker was killed) is safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from desbordante_service.datasets.models import Dataset
from desbordante_service.db import changed_rows
from desbordante_service.errors import Invalid, NotFound, Unavailable
from desbordante_service.profiling import runner
from desbordante_service.profiling.backlog import Backlog
from desbordante_service.profiling.models import (
    ACTIVE,
    STALE_GRACE,
    ProfilingTask,
    TaskStatus,
    stale_running,
)
from desbordante_service.profiling.schemas import TaskCreate, resolve
from desbordante_service.storage import Storage

log = logging.getLogger(__name__)

Publish = Callable[[uuid.UUID, int], None]
FINAL = (TaskStatus.succeeded, TaskStatus.failed)
TIME_LIMIT_MESSAGE = "time limit exceeded ({seconds} s)"
WORKER_LOST_MESSAGE = "worker lost: no result within the time limit"
NO_LIMIT = Backlog(limit=0, retry_after=1)


def create_task(
    session: Session,
    request: TaskCreate,
    max_time_limit: int,
    publish: Publish,
    backlog: Backlog = NO_LIMIT,
) -> ProfilingTask:
    """Validate, admit under the backlog limit, store as `queued`, then enqueue.

    If the broker refuses, nothing is kept.
    """
    algorithm, config = resolve(request.primitive, request.algorithm, request.config)
    time_limit = request.time_limit or max_time_limit
    if time_limit > max_time_limit:
        raise Invalid(f"time_limit: must be at most {max_time_limit} (TASK_TIME_LIMIT_SECONDS)")
    dataset = session.get(Dataset, request.dataset_id, with_for_update={"read": True})
    if dataset is None:
        raise NotFound(f"dataset {request.dataset_id} not found")
    backlog.admit(session)  # holds the backlog lock until the commit below
    task = ProfilingTask(
        id=uuid.uuid4(),
        dataset_id=dataset.id,
        primitive=request.primitive,
        algorithm=algorithm,
        config=config,
        time_limit=time_limit,
        status=TaskStatus.queued,
        attempts=0,
    )
    session.add(task)
    session.commit()
    try:
        publish(task.id, time_limit)
    except Exception as exc:
        log.warning("broker refused task %s: %s", task.id, exc)
        session.delete(task)
        session.commit()
        raise Unavailable("the message broker is unavailable; retry later") from None
    session.refresh(task)
    return task


def list_tasks(
    session: Session, dataset_id: uuid.UUID | None, limit: int, offset: int
) -> Sequence[ProfilingTask]:
    query = select(ProfilingTask).order_by(ProfilingTask.created_at.desc())
    if dataset_id is not None:
        query = query.where(ProfilingTask.dataset_id == dataset_id)
    return session.scalars(query.limit(limit).offset(offset)).all()


def get_task(session: Session, task_id: uuid.UUID) -> ProfilingTask:
    task = session.get(ProfilingTask, task_id, populate_existing=True)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if task.status == TaskStatus.running and _is_stale(task):
        fail_if_running(session, task_id, WORKER_LOST_MESSAGE)
        session.refresh(task)
    return task


def _is_stale(task: ProfilingTask) -> bool:
    if task.started_at is None:
        return False
    limit = timedelta(seconds=task.time_limit) + STALE_GRACE
    return datetime.now(UTC) - task.started_at > limit


def fail_stale(session: Session) -> int:
    """Fail every running task whose worker vanished (as reading it would); returns how many."""
    done = changed_rows(
        session,
        update(ProfilingTask)
        .where(stale_running())
        .values(status=TaskStatus.failed, error=WORKER_LOST_MESSAGE, finished_at=datetime.now(UTC))
        .execution_options(synchronize_session=False),
    )
    session.commit()
    return done


def claim(session: Session, task_id: uuid.UUID) -> int | None:
    """Mark the task running for a new attempt; None when it is already final or unknown."""
    attempt = session.scalar(
        update(ProfilingTask)
        .where(ProfilingTask.id == task_id, ProfilingTask.status.in_(ACTIVE))
        .values(
            status=TaskStatus.running,
            attempts=ProfilingTask.attempts + 1,
            started_at=datetime.now(UTC),
        )
        .returning(ProfilingTask.attempts)
    )
    session.commit()
    return attempt


def finish(
    session: Session,
    task_id: uuid.UUID,
    attempt: int,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of `attempt`; False if a newer attempt or a final state won."""
    status = TaskStatus.failed if error is not None else TaskStatus.succeeded
    done = changed_rows(
        session,
        update(ProfilingTask)
        .where(
            ProfilingTask.id == task_id,
            ProfilingTask.attempts == attempt,
            ProfilingTask.status == TaskStatus.running,
        )
        .values(status=status, result=result, error=error, finished_at=datetime.now(UTC)),
    )
    session.commit()
    return bool(done)


def fail_if_running(session: Session, task_id: uuid.UUID, error: str) -> bool:
    """Fail a task that is still running (hard time limit, lost worker)."""
    done = changed_rows(
        session,
        update(ProfilingTask)
        .where(ProfilingTask.id == task_id, ProfilingTask.status == TaskStatus.running)
        .values(status=TaskStatus.failed, error=error, finished_at=datetime.now(UTC)),
    )
    session.commit()
    return bool(done)


def execute(
    session: Session,
    storage: Storage,
    task_id: uuid.UUID,
    *,
    is_time_limit: Callable[[BaseException], bool] = lambda exc: False,
) -> TaskStatus | None:
    """Run one attempt of a task; returns the recorded status, None when nothing was done."""
    attempt = claim(session, task_id)
    if attempt is None:
        log.info("task %s is already finished or unknown; not running it again", task_id)
        return None
    task = session.get(ProfilingTask, task_id, populate_existing=True)
    dataset = session.get(Dataset, task.dataset_id) if task else None
    if task is None or dataset is None:
        finish(session, task_id, attempt, error="the dataset no longer exists")
        return TaskStatus.failed
    log.info("task %s attempt %d: %s/%s", task_id, attempt, task.primitive, task.algorithm)
    try:
        result = runner.run(
            task.primitive,
            task.algorithm,
            task.config,
            storage.dataset_path(dataset.id),
            dataset.separator,
            dataset.has_header,
            dataset.columns,
        )
    except BaseException as exc:
        if is_time_limit(exc):
            error = TIME_LIMIT_MESSAGE.format(seconds=task.time_limit)
        elif isinstance(exc, Exception):
            error = f"{task.algorithm} failed: {exc}".strip()
        else:
            raise
        session.rollback()
        finish(session, task_id, attempt, error=error)
        return TaskStatus.failed
    finish(session, task_id, attempt, result=result)
    return TaskStatus.succeeded
