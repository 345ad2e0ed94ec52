"""Alembic environment: always runs on the connection handed over by `migrate`."""

from __future__ import annotations

from alembic import context

from desbordante_service.datasets import models as _datasets  # noqa: F401 - register tables
from desbordante_service.db import Base
from desbordante_service.profiling import models as _profiling  # noqa: F401 - register tables

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
