"""Dataset API models."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    size: int
    sha256: str
    separator: str
    has_header: bool
    columns: list[str]
    row_count: int
    created_at: datetime
