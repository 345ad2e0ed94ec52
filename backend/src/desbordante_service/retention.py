"""Retention: delete datasets older than RETENTION_DAYS with their tasks and files.

One pass (`desbordante-service retention`):

1. Running tasks whose worker vanished (past their time limit plus a grace minute) are failed,
   exactly as reading them through the API would.
2. Datasets uploaded more than RETENTION_DAYS ago are deleted with all their tasks and their
   file, except a dataset with a queued or running task: that one is kept with all its data.
   Each batch locks its dataset rows (`FOR UPDATE SKIP LOCKED`), then checks again for active
   tasks: a task creation holds a share lock on its dataset row until it commits, so a dataset
   is never deleted under a task being created (the creation answers 404 if the deletion won).
3. Files that no dataset row owns and that were last written more than RETENTION_DAYS ago are
   removed: `datasets/<id>.csv` and `incoming/<id>.part` / `.lease` left by a crashed process.
   Never the files of an upload in progress: its API process holds the upload's lease.

Nothing else is touched (only files named `<uuid>.csv`, `<uuid>.part`, `<uuid>.lease`), and a
pass is idempotent. Only counts are logged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, exists, func, select, tuple_
from sqlalchemy.orm import Session

from desbordante_service.datasets.models import Dataset
from desbordante_service.db import changed_rows
from desbordante_service.profiling import service
from desbordante_service.profiling.models import ACTIVE, ProfilingTask
from desbordante_service.storage import Storage

log = logging.getLogger(__name__)

BATCH = 200
SECONDS_PER_DAY = 86_400
# Where a crashed process can leave files, and the suffixes it leaves there.
LEFTOVERS = (("datasets", ".csv"), ("incoming", ".part"), ("incoming", ".lease"))


@dataclass
class Report:
    datasets: int = 0
    tasks: int = 0
    dataset_files: int = 0
    leftover_files: int = 0
    stale_tasks_failed: int = 0
    kept_active: int = 0
    kept_uploading: int = 0

    def __str__(self) -> str:
        return (
            f"retention: deleted {self.datasets} datasets with {self.tasks} tasks and "
            f"{self.dataset_files} files; removed {self.leftover_files} leftover files; failed "
            f"{self.stale_tasks_failed} stale running tasks; kept {self.kept_active} old datasets "
            f"with queued or running tasks and {self.kept_uploading} uploads in progress"
        )


Leftovers = dict[uuid.UUID, list[Path]]


def run_pass(session: Session, storage: Storage, days: int, stop: threading.Event) -> Report:
    """One retention pass over the database and the upload directory (see the module doc)."""
    report = Report()
    if days <= 0:
        return report
    # Listed before the database pass: files it deletes are not counted twice.
    leftovers = _old_files(storage, time.time() - days * SECONDS_PER_DAY)
    report.stale_tasks_failed = service.fail_stale(session)
    _delete_old_datasets(session, storage, days, report, stop)
    _remove_leftovers(session, storage, leftovers, report)
    return report


def _old_dataset(days: int):
    return Dataset.created_at < func.now() - func.make_interval(0, 0, 0, days)


def _has_active_task():
    return exists().where(ProfilingTask.dataset_id == Dataset.id, ProfilingTask.status.in_(ACTIVE))


def _delete_old_datasets(
    session: Session, storage: Storage, days: int, report: Report, stop: threading.Event
) -> None:
    last: tuple | None = None
    while not stop.is_set():
        query = (
            select(Dataset.id, Dataset.created_at)
            .where(_old_dataset(days), ~_has_active_task())
            .order_by(Dataset.created_at, Dataset.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        if last is not None:
            query = query.where(tuple_(Dataset.created_at, Dataset.id) > last)
        rows = session.execute(query).all()
        if not rows:
            session.rollback()
            break
        last = (rows[-1].created_at, rows[-1].id)
        ids = [row.id for row in rows]
        # Rows are locked now, so no task can be created on them: this answer is final.
        busy = set(
            session.scalars(
                select(ProfilingTask.dataset_id).where(
                    ProfilingTask.dataset_id.in_(ids), ProfilingTask.status.in_(ACTIVE)
                )
            )
        )
        doomed = [dataset_id for dataset_id in ids if dataset_id not in busy]
        report.tasks += _delete(session, ProfilingTask, ProfilingTask.dataset_id.in_(doomed))
        report.datasets += _delete(session, Dataset, Dataset.id.in_(doomed))
        session.commit()
        for dataset_id in doomed:  # after the commit: a crash here leaves leftovers, not rows
            if _unlink(storage.dataset_path(dataset_id)):
                report.dataset_files += 1
    report.kept_active = session.execute(
        select(func.count()).select_from(Dataset).where(_old_dataset(days), _has_active_task())
    ).scalar_one()
    session.rollback()


def _delete(session: Session, model: type, where) -> int:
    statement = delete(model).where(where).execution_options(synchronize_session=False)
    return changed_rows(session, statement)


def _old_files(storage: Storage, cutoff: float) -> Leftovers:
    """Our files (named after a dataset id) last written before `cutoff`, by dataset id."""
    leftovers: Leftovers = defaultdict(list)
    for directory, suffix in LEFTOVERS:
        for path in (storage.root / directory).glob(f"*{suffix}"):
            try:
                dataset_id = uuid.UUID(path.name.removesuffix(suffix))
                old = path.stat().st_mtime < cutoff
            except (ValueError, FileNotFoundError):  # not ours, or gone meanwhile
                continue
            if old and path.name == f"{dataset_id}{suffix}":
                leftovers[dataset_id].append(path)
    return leftovers


def _remove_leftovers(
    session: Session, storage: Storage, leftovers: Leftovers, report: Report
) -> None:
    ids = list(leftovers)
    owned: set[uuid.UUID] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        owned.update(session.scalars(select(Dataset.id).where(Dataset.id.in_(chunk))))
    session.rollback()
    for dataset_id, paths in leftovers.items():
        with storage.abandoned(dataset_id) as free:
            if not free:
                report.kept_uploading += 1
                continue
            for path in paths:
                if path.suffix == ".csv" and dataset_id in owned:
                    continue  # a live dataset's file (kept, or newer than RETENTION_DAYS)
                if _unlink(path):
                    report.leftover_files += 1


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
