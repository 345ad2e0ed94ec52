"""Database engine, sessions and the declarative base."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from desbordante_service.settings import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """One engine per process; pre-ping so a restarted PostgreSQL is reconnected transparently."""
    return create_engine(
        get_settings().database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


@lru_cache(maxsize=1)
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that is always closed; callers commit explicitly."""
    session = _session_factory()()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def changed_rows(session: Session, statement: Executable) -> int:
    """Execute an UPDATE or DELETE without RETURNING; how many rows it changed.

    `Session.execute` returns a `CursorResult` for such a statement but is typed as returning
    any `Result` (sqlalchemy#12913); SQLAlchemy's advice is this cast.
    """
    return cast(CursorResult[Any], session.execute(statement)).rowcount
