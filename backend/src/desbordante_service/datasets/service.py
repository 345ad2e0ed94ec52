"""Dataset logic: accept a received upload, list, get, delete."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from desbordante_service.datasets.csvcheck import CsvError, inspect_csv
from desbordante_service.datasets.models import Dataset
from desbordante_service.datasets.upload import ReceivedUpload
from desbordante_service.errors import Conflict, Invalid, NotFound
from desbordante_service.profiling.models import ACTIVE, ProfilingTask
from desbordante_service.storage import Storage

# PostgreSQL text cannot hold NUL, and the separator is stored with the dataset.
NOT_SEPARATORS = '\r\n"\x00'
# What the document's boolean is sent as in a form; any case ("False" is what Python's str gives).
BOOLEANS = {"true": True, "false": False}


def parse_form(fields: dict[str, str]) -> tuple[str, bool]:
    """Validate the `separator` and `has_header` form fields."""
    unknown = sorted(set(fields) - {"separator", "has_header"})
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown form field; allowed: file, separator, has_header")
    separator = fields.get("separator", ",")
    if len(separator) != 1 or separator in NOT_SEPARATORS:
        raise Invalid(
            "separator: must be exactly one character other than a quote, a newline or NUL"
        )
    has_header = BOOLEANS.get(fields.get("has_header", "true").strip().lower())
    if has_header is None:
        raise Invalid("has_header: must be a boolean: true or false")
    return separator, has_header


def accept(
    session: Session, storage: Storage, dataset_id: uuid.UUID, upload: ReceivedUpload
) -> Dataset:
    """Check the stored part file and turn it into a dataset; on any failure nothing is left."""
    try:
        separator, has_header = parse_form(upload.fields)
        if upload.size == 0:
            raise Invalid("file: the uploaded file is empty")
        try:
            summary = inspect_csv(upload.path, separator, has_header)
        except CsvError as exc:
            raise Invalid(f"file: {exc}") from None
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
