"""Profiling task API models and request validation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from desbordante_service.errors import Invalid
from desbordante_service.profiling.models import TaskStatus
from desbordante_service.profiling.primitives import (
    INTEGRAL,
    PRIMITIVES,
    Options,
    Primitive,
    json_int,
)
from desbordante_service.settings import INT4_MAX

TIME_LIMIT_HELP = "seconds; at most TASK_TIME_LIMIT_SECONDS (default: that limit)"
TimeLimit = Annotated[  # the column's integer
    int, Field(strict=True, ge=1, le=INT4_MAX, description=TIME_LIMIT_HELP), INTEGRAL
]


class TaskCreate(BaseModel):
    """What `POST /tasks` reads; `resolve` then checks primitive, algorithm and config.

    The OpenAPI document describes the same rules precisely with `documented_variants`.
    """

    model_config = ConfigDict(extra="forbid")

    dataset_id: uuid.UUID
    primitive: str = Field(description=f"one of: {', '.join(sorted(PRIMITIVES))}")
    algorithm: str | None = Field(default=None, description="defaults per primitive")
    config: dict[str, Any] = Field(default_factory=dict)
    time_limit: TimeLimit | None = None


def documented_variants(max_time_limit: int) -> list[type[BaseModel]]:
    """`TaskCreate` as the API documents it: one model per primitive and algorithm.

    Each names its primitive and algorithm as constants (the default algorithm may be left out)
    and its config as the algorithm's options model, so the schema accepts exactly what
    `TaskCreate` and `resolve` accept with TASK_TIME_LIMIT_SECONDS = `max_time_limit`.
    """
    return [
        _variant(spec, name, options, max_time_limit)
        for spec in PRIMITIVES.values()
        for name, options in spec.algorithms.items()
    ]


def _variant(
    spec: Primitive, algorithm: str, options: type[Options], max_time_limit: int
) -> type[BaseModel]:
    if algorithm == spec.default:
        chosen: Any = (_constant(algorithm) | None, Field(default=None, description="the default"))
    else:
        chosen = (_constant(algorithm), ...)
    return create_model(
        f"Task{spec.name.capitalize()}{algorithm}",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"{algorithm}: {spec.description}",
        dataset_id=(uuid.UUID, ...),
        primitive=(_constant(spec.name), ...),
        algorithm=chosen,
        config=(options, Field(default_factory=options)),
        time_limit=(json_int(ge=1, le=max_time_limit, description=TIME_LIMIT_HELP) | None, None),
    )


def _constant(value: str) -> Any:
    """`Literal[VALUE]`, a type made at run time (so typed `Any`)."""
    return Literal[value]


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


def _config_error(
    exc: ValidationError, primitive: str, algorithm: str, model: type[BaseModel]
) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    allowed = ", ".join(sorted(model.model_fields)) or "none"
    if first["type"] == "extra_forbidden":
        return (
            f"config.{field}: unknown option for {primitive}/{algorithm}; allowed options: "
            f"{allowed}"
        )
    return f"config.{field}: {first['msg']}"
