"""Bounded query parameters shared by the routers: every number fits what PostgreSQL holds."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from desbordante_service.settings import LONG_POLL_LIMIT_SECONDS

BIGINT_MAX = 2**63 - 1  # PostgreSQL bigint, the type of LIMIT/OFFSET
MAX_PAGE = 500

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="how many items at most")]
Offset = Annotated[int, Query(ge=0, le=BIGINT_MAX, description="how many items to skip")]
Wait = Annotated[
    float,
    Query(
        ge=0,
        le=LONG_POLL_LIMIT_SECONDS,
        allow_inf_nan=False,
        description="seconds to wait for a final status; the server waits at most "
        "LONG_POLL_MAX_SECONDS (this server's value is in the API description)",
    ),
]
