"""/api/v1/datasets"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from desbordante_service.api.deps import SessionDep, SettingsDep, StorageDep
from desbordante_service.datasets import service, upload
from desbordante_service.datasets.schemas import DatasetOut
from desbordante_service.db import session_scope

router = APIRouter(prefix="/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    # The small fields first: a client sending them before the file lets the
                    # CSV check run while the file arrives (else the file is read once more).
                    "properties": {
                        "separator": {"type": "string", "default": ",", "maxLength": 1},
                        "has_header": {"type": "boolean", "default": True},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    openapi_extra=UPLOAD_BODY,
    summary="Upload a CSV dataset",
    responses={
        413: {"description": "too large"},
        422: {"description": "not a usable CSV"},
        507: {"description": "the storage quota or the disk has no room for it"},
    },
)
async def upload_dataset(
    request: Request, settings: SettingsDep, storage: StorageDep
) -> DatasetOut:
    """Stream the `file` part to disk (size-capped, checked on the way) and store its metadata."""
    quota = settings.UPLOAD_QUOTA_BYTES

    def _room() -> upload.Room:
        storage.ensure()
        with session_scope() as session:
            return service.room(session, storage, settings.MAX_UPLOAD_SIZE_BYTES, quota)

    room = await run_in_threadpool(_room)
    dataset_id = uuid.uuid4()
    received = await upload.receive(
        request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        path=storage.part_path(dataset_id),
        room=room,
    )

    def _accept() -> DatasetOut:
        with session_scope() as session:
            dataset = service.accept(session, storage, dataset_id, received, quota)
            return DatasetOut.model_validate(dataset)

    try:
        return await run_in_threadpool(_accept)
    finally:  # also when this request is cancelled (shutdown) before `accept` ran
        received.path.unlink(missing_ok=True)


@router.get("", response_model=list[DatasetOut], summary="List datasets")
def list_datasets(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in service.list_datasets(session, limit, offset)]


@router.get("/{dataset_id}", response_model=DatasetOut, summary="Get a dataset")
def get_dataset(dataset_id: uuid.UUID, session: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(service.get_dataset(session, dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a dataset")
def delete_dataset(dataset_id: uuid.UUID, session: SessionDep, storage: StorageDep) -> Response:
    """Remove the file and the row; 409 while tasks on it are queued or running."""
    service.delete_dataset(session, storage, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
