"""Dataset logic: room for an upload, accept a received upload, list, get, delete."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from desbordante_service.datasets.csvcheck import CsvError, CsvOutcome, read_blocks, scan
from desbordante_service.datasets.form import parse_form
from desbordante_service.datasets.models import Dataset
from desbordante_service.datasets.upload import ReceivedUpload, Room, UploadError
from desbordante_service.errors import Conflict, Invalid, NotFound
from desbordante_service.profiling.models import ACTIVE, ProfilingTask
from desbordante_service.storage import Storage

QUOTA_LOCK = 0x5155_4F54_4120_4453  # pg_advisory_xact_lock key: one quota check at a time


def stored_bytes(session: Session) -> int:
    """Bytes of all datasets (each stored file has its row, with its size)."""
    return session.scalar(select(func.coalesce(func.sum(Dataset.size), 0))) or 0


def quota_detail(quota: int, stored: int) -> str:
    return (
        f"file: the upload does not fit into the storage quota of {quota} bytes "
        f"({stored} bytes stored); delete datasets or raise UPLOAD_QUOTA_BYTES"
    )


def room(session: Session, storage: Storage, max_file_bytes: int, quota: int) -> Room:
    """What the next upload may take: size cap, the rest of the quota (0: none), free disk."""
    free = shutil.disk_usage(storage.root).free
    if not quota:
        return Room(max_file_bytes, free_bytes=free)
    stored = stored_bytes(session)
    return Room(max_file_bytes, max(quota - stored, 0), quota_detail(quota, stored), free)


def accept(
    session: Session,
    storage: Storage,
    dataset_id: uuid.UUID,
    upload: ReceivedUpload,
    quota: int = 0,
) -> Dataset:
    """Check the stored part file and turn it into a dataset; on any failure nothing is left."""
    try:
        separator, has_header = parse_form(upload.fields)
        if upload.size == 0:
            raise Invalid("file: the uploaded file is empty")
        try:
            summary = _check(upload, separator).summary(has_header)
        except CsvError as exc:
            raise Invalid(f"file: {exc}") from None
        if quota:
            _reserve(session, quota, upload.size)
        dataset = Dataset(
            id=dataset_id,
            name=upload.filename,
            size=upload.size,
            sha256=upload.sha256,
            separator=separator,
            has_header=has_header,
            columns=summary.columns,
            row_count=summary.row_count,
        )
        session.add(dataset)
        session.flush()
        final = storage.dataset_path(dataset_id)
        os.replace(upload.path, final)
        try:
            session.commit()
        except BaseException:
            final.unlink(missing_ok=True)
            raise
    finally:
        upload.path.unlink(missing_ok=True)
    session.refresh(dataset)
    return dataset


def _check(upload: ReceivedUpload, separator: str) -> CsvOutcome:
    """The check done while receiving; read the file again only if it assumed another separator
    (the `separator` field came after the file part)."""
    if upload.check is not None and upload.checked_with == separator:
        return upload.check
    return scan(read_blocks(upload.path), separator)


def _reserve(session: Session, quota: int, size: int) -> None:
    """Refuse the upload if it does not fit into the quota; held until this transaction ends,
    so concurrent uploads (on any replica) cannot together exceed it."""
    session.execute(select(func.pg_advisory_xact_lock(QUOTA_LOCK)))
    stored = stored_bytes(session)
    if stored + size > quota:
        raise UploadError(507, quota_detail(quota, stored))


def list_datasets(session: Session, limit: int, offset: int) -> Sequence[Dataset]:
    query = select(Dataset).order_by(Dataset.created_at.desc()).limit(limit).offset(offset)
    return session.scalars(query).all()


def get_dataset(session: Session, dataset_id: uuid.UUID) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def delete_dataset(session: Session, storage: Storage, dataset_id: uuid.UUID) -> None:
    """Remove the row (and its finished tasks) and the file; refused while tasks are active."""
    dataset = session.get(Dataset, dataset_id, with_for_update=True)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    active = exists().where(
        ProfilingTask.dataset_id == dataset_id, ProfilingTask.status.in_(ACTIVE)
    )
    if session.scalar(select(active)):
        raise Conflict(f"dataset {dataset_id} has queued or running tasks; retry when they finish")
    session.delete(dataset)
    session.commit()
    storage.dataset_path(dataset_id).unlink(missing_ok=True)
