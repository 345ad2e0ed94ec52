"""Schema migrations: Alembic under a PostgreSQL advisory lock, so concurrent runs are safe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from desbordante_service.db import get_engine

# Any constant works; it only has to be the same for every `migrate` of this service.
ADVISORY_LOCK_KEY = 0x44455342  # "DESB"
SCRIPT_LOCATION = Path(__file__).with_name("migrations")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade() -> tuple[str | None, str | None]:
    """Upgrade to head; returns (revision before, revision after)."""
    with get_engine().connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()
        try:
            before = current_revision(connection)
            command.upgrade(_config(connection), "head")
            connection.commit()
            after = current_revision(connection)
        except BaseException:
            connection.rollback()  # so the unlock below can run and the real error surfaces
            raise
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
    return before, after


def is_current() -> bool:
    """True when the database schema is at the head revision."""
    with get_engine().connect() as connection:
        return current_revision(connection) == head_revision()
