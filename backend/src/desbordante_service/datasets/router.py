"""/api/v1/datasets"""

from __future__ import annotations

import errno
import uuid

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from desbordante_service.api.deps import SessionDep, SettingsDep, StorageDep
from desbordante_service.api.errors import READ_MANY, READ_ONE, errors
from desbordante_service.api.openapi import link
from desbordante_service.api.params import Limit, Offset
from desbordante_service.api.ratelimit import RATE_LIMITED
from desbordante_service.datasets import form, service, upload
from desbordante_service.datasets.schemas import DatasetOut
from desbordante_service.datasets.upload import UploadError
from desbordante_service.db import session_scope
from desbordante_service.storage import Storage, UploadLease

router = APIRouter(prefix="/datasets", tags=["datasets"])

FILE_RULES = (
    "The dataset: CSV text, sent as UTF-8 (a file that is not UTF-8 is 422). Fields are "
    'separated by `separator`, records end with LF or CRLF; a field may be quoted with `"` (then '
    "it may hold the separator, line breaks and doubled quotes). Every record has as many fields "
    "as the first one, which must not be empty; with `has_header` the first record names the "
    "columns, each name non-empty after trimming spaces, without NUL, and unique. Not empty, at "
    "most MAX_UPLOAD_SIZE_BYTES bytes (this server's value is in the API description). Sent as "
    "a file part or a plain form field; any part Content-Type is accepted; the client's file "
    "name is kept as `name` (without control characters), never used as a path. A file breaking "
    "a rule is 422 naming the first bad line."
)
SEPARATOR_PATTERN = "^[^" + "".join(f"\\u{ord(char):04x}" for char in form.NOT_SEPARATORS) + "]$"
# The `file` part is text, not any bytes: a JSON Schema string (Unicode) whose content is CSV
# (OpenAPI 3.1: `contentMediaType`, not `format: binary`), sent as UTF-8 (the part's encoding).
# Swagger UI still offers a file picker for it (it does for any `contentMediaType`).
FILE_MEDIA_TYPE = "text/csv"
FILE_PART_CONTENT_TYPE = "text/csv; charset=utf-8"
CREATED_ID = "$response.body#/id"
UPLOADED = {
    "links": {
        "GetDataset": link(
            "GET", "/datasets/{dataset_id}", "the dataset", parameters={"dataset_id": CREATED_ID}
        ),
        "DeleteDataset": link(
            "DELETE", "/datasets/{dataset_id}", "remove it", parameters={"dataset_id": CREATED_ID}
        ),
        "CreateTask": link("POST", "/tasks", "profile it", requestBody={"dataset_id": CREATED_ID}),
        "ListTasks": link("GET", "/tasks", "its tasks", parameters={"dataset_id": CREATED_ID}),
    }
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    # The small fields first: a client sending them before the file lets the
                    # CSV check run while the file arrives (else the file is read once more).
                    "properties": {
                        "separator": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 1,
                            "pattern": SEPARATOR_PATTERN,
                            "default": ",",
                            "description": "one character other than a quote, a newline or NUL",
                        },
                        "has_header": {
                            "type": "boolean",
                            "default": True,
                            "description": "whether the first record names the columns; as "
                            "form text `true` or `false`, in any case",
                        },
                        "file": {
                            "type": "string",
                            "contentMediaType": FILE_MEDIA_TYPE,
                            "minLength": 1,
                            "description": FILE_RULES,
                        },
                    },
                },
                "encoding": {"file": {"contentType": FILE_PART_CONTENT_TYPE}},
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
    responses={201: UPLOADED, **errors(400, 413, 415, 422, 429, 503, 507)},
    dependencies=RATE_LIMITED,
)
async def upload_dataset(
    request: Request, settings: SettingsDep, storage: StorageDep
) -> DatasetOut:
    """Stream the `file` part to disk (size-capped, checked on the way) and store its metadata."""
    quota = settings.UPLOAD_QUOTA_BYTES
    dataset_id = uuid.uuid4()

    def _begin() -> tuple[upload.Room, UploadLease]:
        storage.ensure()
        with session_scope() as session:
            room = service.room(session, storage, settings.MAX_UPLOAD_SIZE_BYTES, quota)
        return room, _lease(storage, dataset_id)

    room, lease = await run_in_threadpool(_begin)
    try:  # the lease tells retention that this upload is in progress
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
    finally:
        lease.release()


def _lease(storage: Storage, dataset_id: uuid.UUID) -> UploadLease:
    try:
        return storage.lease_upload(dataset_id)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadError(507, upload.NO_SPACE) from None
        raise


@router.get("", response_model=list[DatasetOut], summary="List datasets", responses=READ_MANY)
def list_datasets(session: SessionDep, limit: Limit = 100, offset: Offset = 0) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in service.list_datasets(session, limit, offset)]


@router.get("/{dataset_id}", response_model=DatasetOut, summary="Get a dataset", responses=READ_ONE)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(service.get_dataset(session, dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a dataset",
    responses=errors(404, 409, 422, 503),
)
def delete_dataset(dataset_id: uuid.UUID, session: SessionDep, storage: StorageDep) -> Response:
    """Remove the file and the row; 409 while tasks on it are queued or running."""
    service.delete_dataset(session, storage, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
