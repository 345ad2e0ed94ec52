"""Profiling task table."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Enum, ForeignKey, Integer, String, Text, and_, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from desbordante_service.db import Base


class TaskStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


ACTIVE = (TaskStatus.queued, TaskStatus.running)
# A running task whose worker vanished is failed this long after its hard time limit.
STALE_GRACE = timedelta(seconds=60)


class ProfilingTask(Base):
    __tablename__ = "profiling_tasks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    primitive: Mapped[str] = mapped_column(String(32))
    algorithm: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    time_limit: Mapped[int] = mapped_column(Integer)
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, name="task_status", values_callable=lambda e: [m.value for m in e]),
        index=True,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)


def stale_running() -> ColumnElement[bool]:
    """SQL: the task is `running` but its hard time limit plus the grace ran out (worker lost)."""
    limit = func.make_interval(
        0, 0, 0, 0, 0, 0, ProfilingTask.time_limit + STALE_GRACE.total_seconds()
    )
    return and_(
        ProfilingTask.status == TaskStatus.running,
        ProfilingTask.started_at < func.now() - limit,
    )
