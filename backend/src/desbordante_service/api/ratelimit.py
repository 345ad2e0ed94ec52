"""Per-client rate limit of the write endpoints (POST /datasets, POST /tasks), in this process.

At most RATE_LIMIT_PER_MINUTE such requests per client IP in any 60-second window (a moving
window of the `limits` library, kept in memory; 0 turns it off); beyond it, 429 with
`Retry-After`. Both endpoints share one budget per client, counted before the body is read.

Scope: one API process. With API_WORKERS=N processes and R replicas a client may get up to N*R
times the limit, so the exact per-IP limit of a cluster is the edge's (Traefik rateLimit); this
one protects a stack without an edge and is a backstop behind it. The client is
`request.client.host`, which uvicorn takes from X-Forwarded-For when a proxy sets it.
"""

from __future__ import annotations

import math
import time

from fastapi import Depends, Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from desbordante_service.errors import TooManyRequests


class ClientRateLimit:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.item = RateLimitItemPerMinute(per_minute)
        self.limiter = MovingWindowRateLimiter(MemoryStorage()) if per_minute > 0 else None

    def check(self, client: str) -> None:
        """Count one request of `client`; raise `TooManyRequests` when over the limit."""
        if self.limiter is None:
            return
        if self.limiter.hit(self.item, client):
            return
        reset = self.limiter.get_window_stats(self.item, client).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise TooManyRequests(
            f"too many requests: at most {self.per_minute} uploads and task creations per "
            f"minute per client (RATE_LIMIT_PER_MINUTE); retry in {retry_after} seconds",
            retry_after=retry_after,
        )


def _rate_limit(request: Request) -> None:
    client = request.client.host if request.client else "unknown"
    request.app.state.rate_limit.check(client)


# `dependencies=` of the rate-limited routes.
RATE_LIMITED = [Depends(_rate_limit)]
