"""Typed dependencies of the routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from desbordante_service.db import session_scope
from desbordante_service.profiling.service import Publish
from desbordante_service.settings import Settings, get_settings
from desbordante_service.storage import Storage
from desbordante_service.worker.app import publish


def _session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def _storage(settings: Annotated[Settings, Depends(get_settings)]) -> Storage:
    return Storage(settings.UPLOADED_FILES_DIR_PATH)


def _publisher() -> Publish:
    return publish


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(_storage)]
PublishDep = Annotated[Publish, Depends(_publisher)]
