"""/api/v1/datasets"""

from __future__ import annotations

import errno
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from desbordante_service.api.deps import SessionDep, SettingsDep, StorageDep
from desbordante_service.api.ratelimit import RATE_LIMITED
from desbordante_service.datasets import service, upload
from desbordante_service.datasets.schemas import DatasetOut
from desbordante_service.datasets.upload import UploadError
from desbordante_service.db import session_scope
from desbordante_service.storage import Storage, UploadLease

router = APIRouter(prefix="/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "separator": {"type": "string", "default": ",", "maxLength": 1},
                        "has_header": {"type": "boolean", "default": True},
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
    responses={413: {"description": "too large"}, 422: {"description": "not a usable CSV"}},
    dependencies=RATE_LIMITED,
)
async def upload_dataset(
    request: Request, settings: SettingsDep, storage: StorageDep
) -> DatasetOut:
    """Stream the `file` part to disk (size-capped), check the CSV and store its metadata."""
    await run_in_threadpool(storage.ensure)
    dataset_id = uuid.uuid4()
    lease = await run_in_threadpool(_lease, storage, dataset_id)
    try:  # the lease tells retention that this upload is in progress
        received = await upload.receive(
            request.stream(),
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            path=storage.part_path(dataset_id),
            max_file_bytes=settings.MAX_UPLOAD_SIZE_BYTES,
        )

        def _accept() -> DatasetOut:
            with session_scope() as session:
                dataset = service.accept(session, storage, dataset_id, received)
                return DatasetOut.model_validate(dataset)

        try:
            return await run_in_threadpool(_accept)
        finally:  # also when this request is cancelled (shutdown) before `accept` ran
            received.path.unlink(missing_ok=True)
    finally:
        lease.release()


def _lease(storage: Storage, dataset_id: uuid.UUID) -> UploadLease:
    try:
        return storage.lease_upload(dataset_id)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError(507, "not enough storage space for this upload") from None
        raise


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
