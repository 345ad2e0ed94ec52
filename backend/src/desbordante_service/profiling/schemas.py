"""Profiling task API models and request validation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from desbordante_service.errors import Invalid
from desbordante_service.profiling.models import TaskStatus
from desbordante_service.profiling.primitives import PRIMITIVES


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: uuid.UUID
    primitive: str = Field(description=f"one of: {', '.join(sorted(PRIMITIVES))}")
    algorithm: str | None = Field(default=None, description="defaults per primitive")
    config: dict[str, Any] = Field(default_factory=dict)
    time_limit: int | None = Field(
        default=None, ge=1, description="seconds; at most TASK_TIME_LIMIT_SECONDS"
    )


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    dataset_id: uuid.UUID
    primitive: str
    algorithm: str
    config: dict[str, Any]
    time_limit: int
    status: TaskStatus
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


def resolve(primitive: str, algorithm: str | None, config: dict[str, Any]) -> tuple[str, dict]:
    """Validate primitive, algorithm and config; return the algorithm and the clean config."""
    spec = PRIMITIVES.get(primitive)
    if spec is None:
        allowed = ", ".join(sorted(PRIMITIVES))
        raise Invalid(f"primitive: unknown primitive {primitive!r}; allowed: {allowed}")
    name = algorithm or spec.default
    model = spec.algorithms.get(name)
    if model is None:
        allowed = ", ".join(sorted(spec.algorithms))
        raise Invalid(f"algorithm: unknown algorithm {name!r} for {primitive}; allowed: {allowed}")
    try:
        options = model.model_validate(config)
    except ValidationError as exc:
        raise Invalid(_config_error(exc, primitive, name, model)) from None
    return name, options.model_dump(exclude_none=True)


def _config_error(exc: ValidationError, primitive: str, algorithm: str, model: type) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    allowed = ", ".join(sorted(model.model_fields)) or "none"
    if first["type"] == "extra_forbidden":
        return (
            f"config.{field}: unknown option for {primitive}/{algorithm}; allowed options: "
            f"{allowed}"
        )
    return f"config.{field}: {first['msg']}"
