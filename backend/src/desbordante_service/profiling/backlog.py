"""The queue-depth limit: no new task while MAX_PENDING_TASKS tasks are queued or running.

The backlog is counted in PostgreSQL (tasks `queued`, plus `running` ones whose worker has not
vanished), not in the broker: the count is exact (the broker's queue depth misses the messages
workers have prefetched or are running, and counts redeliveries), it works while the broker is
down, it is the same number clients see through the API, and with the index on `status` it costs
one index scan of at most the limit's size.

Guarantee: creations are serialised by a transaction-level PostgreSQL advisory lock held from the
count to the commit of the new task (a few milliseconds), so any number of concurrent creations,
in any number of API processes or replicas sharing the database, never take the backlog above
the limit. Only task creations take the lock; nothing else waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, not_, select
from sqlalchemy.orm import Session

from desbordante_service.errors import Unavailable
from desbordante_service.profiling.models import ACTIVE, ProfilingTask, stale_running

# Any constant distinct from the other advisory locks of this service (migrate uses 0x44455342).
BACKLOG_LOCK_KEY = 0x44455343  # "DESC"


@dataclass(frozen=True)
class Backlog:
    limit: int  # 0: no limit
    retry_after: int  # seconds, sent as `Retry-After` with the 503

    def admit(self, session: Session) -> None:
        """Raise `Unavailable` if the backlog is full; else hold the lock until the commit."""
        if self.limit <= 0:
            return
        session.execute(select(func.pg_advisory_xact_lock(BACKLOG_LOCK_KEY)))
        pending = session.scalar(
            select(func.count())
            .select_from(ProfilingTask)
            .where(ProfilingTask.status.in_(ACTIVE), not_(stale_running()))
        )
        if pending is not None and pending >= self.limit:
            raise Unavailable(
                f"the task queue is full ({pending} tasks queued or running, "
                f"MAX_PENDING_TASKS={self.limit}); retry in {self.retry_after} seconds",
                retry_after=self.retry_after,
            )
