"""/api/v1/tasks"""

from __future__ import annotations

import time
import uuid

import anyio
from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from desbordante_service.api.deps import PublishDep, SessionDep, SettingsDep
from desbordante_service.api.errors import CREATE_TASK, READ_MANY, READ_ONE
from desbordante_service.api.openapi import link
from desbordante_service.api.params import Limit, Offset, Wait
from desbordante_service.api.ratelimit import RATE_LIMITED
from desbordante_service.db import session_scope
from desbordante_service.profiling import service
from desbordante_service.profiling.backlog import Backlog
from desbordante_service.profiling.primitives import PRIMITIVES
from desbordante_service.profiling.schemas import TaskCreate, TaskOut

router = APIRouter(prefix="/tasks", tags=["tasks"])

CREATED = {
    "links": {
        "GetTask": link(
            "GET", "/tasks/{task_id}", "poll it", parameters={"task_id": "$response.body#/id"}
        ),
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    summary="Create",
    responses={202: CREATED, **CREATE_TASK},
    dependencies=RATE_LIMITED,
)
def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    publish: PublishDep,
) -> TaskOut:
    """Validate the primitive, algorithm and config, store the task and enqueue it.

    503 with `Retry-After` while MAX_PENDING_TASKS tasks are queued or running.
    """
    backlog = Backlog(settings.MAX_PENDING_TASKS, settings.QUEUE_FULL_RETRY_AFTER_SECONDS)
    task = service.create_task(session, body, settings.TASK_TIME_LIMIT_SECONDS, publish, backlog)
    response.headers["Location"] = str(request.url_for("get_task", task_id=task.id))
    return TaskOut.model_validate(task)


@router.get("", response_model=list[TaskOut], summary="List tasks", responses=READ_MANY)
def list_tasks(
    session: SessionDep, dataset_id: uuid.UUID | None = None, limit: Limit = 100, offset: Offset = 0
) -> list[TaskOut]:
    tasks = service.list_tasks(session, dataset_id, limit, offset)
    return [TaskOut.model_validate(t) for t in tasks]


@router.get("/primitives", summary="Primitives, algorithms and their options")
def primitives() -> dict[str, dict]:
    return {
        name: {
            "description": spec.description,
            "default_algorithm": spec.default,
            "algorithms": {
                alg: model.model_json_schema() for alg, model in spec.algorithms.items()
            },
        }
        for name, spec in PRIMITIVES.items()
    }


@router.get(
    "/{task_id}",
    response_model=TaskOut,
    summary="Get a task (optionally long-poll)",
    responses=READ_ONE,
)
async def get_task(task_id: uuid.UUID, settings: SettingsDep, wait: Wait = 0) -> TaskOut:
    """Return the task; with `wait`, block until it is final or the time runs out."""
    deadline = time.monotonic() + min(wait, settings.LONG_POLL_MAX_SECONDS)

    def _read() -> TaskOut:
        with session_scope() as session:
            return TaskOut.model_validate(service.get_task(session, task_id))

    task = await run_in_threadpool(_read)
    delay = 0.01
    while task.status not in service.FINAL and (remaining := deadline - time.monotonic()) > 0:
        await anyio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.1)
        task = await run_in_threadpool(_read)
    return task
