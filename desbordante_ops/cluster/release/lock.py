"""The deploy lock: one deploy at a time in a namespace, whichever machine it runs on.

A coordination.k8s.io/v1 Lease `desbordante-deploy` in the environment's namespace, used the way
client-go's leader election uses one:
- acquire: create it (409: it exists), or take over a Lease that is free (no holder) or expired
  (renewTime + leaseDurationSeconds has passed: its holder died) with an update that carries the
  resourceVersion just read, so of two takers the API server lets exactly one win (409 for the
  other);
- renew: a background thread moves renewTime every RENEW_SECONDS while the deploy runs;
- release: an update that clears holderIdentity (the object stays for the next acquire).
`invoke deploy` and `deploy.rollback` wait for a held lock (bounded, with progress) and then exit
naming the holder; an auto-update cycle skips its turn (cluster/autoupdate/cycle.py). A
kubeconfig that may not use the Lease gets one line saying why (release/rights.py).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import (
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    TRANSPORT_ERRORS,
    describe_error,
)
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.cluster.release.rights import denied
from desbordante_ops.core.console import tracker, warn
from desbordante_ops.core.poll import poll

LEASE = "desbordante-deploy"
DURATION_SECONDS = 60
RENEW_SECONDS = 15.0
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, and since when (RFC 3339)."""

    identity: str
    since: str

    def __str__(self) -> str:
        return f"{self.identity} since {self.since}" if self.since else self.identity


class Busy(Exception):
    """The lock is held by somebody else."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(str(holder))
        self.holder = holder


def identity(action: str) -> str:
    """`user@host (ACTION, pid N)`: who takes the lock, as other deploys will see it."""
    return f"{getpass.getuser()}@{socket.gethostname()} ({action}, pid {os.getpid()})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime | None) -> str:
    if when is None:
        return ""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def holder_of(lease: k8s.V1Lease, now: dt.datetime) -> Holder | None:
    """The live holder of LEASE, None when it is free or expired."""
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return None
    renewed = spec.renew_time or spec.acquire_time
    duration = dt.timedelta(seconds=spec.lease_duration_seconds or DURATION_SECONDS)
    if renewed is None or renewed + duration < now:
        return None
    return Holder(spec.holder_identity, _iso(spec.acquire_time))


def _spec(who: str, now: dt.datetime, transitions: int = 0) -> k8s.V1LeaseSpec:
    return k8s.V1LeaseSpec(
        holder_identity=who,
        lease_duration_seconds=DURATION_SECONDS,
        acquire_time=now,
        renew_time=now,
        lease_transitions=transitions,
    )


def _forbidden(k: Kube, namespace: str, env: str) -> Exit:
    return Exit(denied(k, namespace, env, f"use the deploy lock (Lease {LEASE})"))


def try_acquire(k: Kube, namespace: str, env: str, who: str) -> k8s.V1Lease | Holder | None:
    """Take the lock as WHO: the Lease we now hold, or the Holder that has it; None when the
    namespace does not exist yet (the deploy that creates it runs unlocked)."""
    coordination = k.coordination
    now = _now()
    body = k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name=LEASE, labels=dict(names.MANAGED_BY)), spec=_spec(who, now)
    )
    try:
        try:
            return coordination.create_namespaced_lease(namespace, body)
        except ApiException as exc:
            if exc.status == NOT_FOUND:  # no namespace yet: nothing in it to protect
                return None
            if exc.status != CONFLICT:
                raise
        current = read_or_none(coordination.read_namespaced_lease, LEASE, namespace)
        if current is None:  # released and deleted in between: the next try creates it
            return Holder("another deploy (just finished)", "")
        holder = holder_of(current, now)
        if holder is not None:
            return holder
        current.spec = _spec(who, now, (current.spec.lease_transitions or 0) + 1)
        try:
            return coordination.replace_namespaced_lease(LEASE, namespace, current)
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
        taken = read_or_none(coordination.read_namespaced_lease, LEASE, namespace)
        return (taken and holder_of(taken, _now())) or Holder("another deploy", "")
    except ApiException as exc:
        if exc.status == FORBIDDEN:
            raise _forbidden(k, namespace, env) from None
        raise


def current_holder(coordination: k8s.CoordinationV1Api, namespace: str) -> Holder | None:
    """Who holds the lock now (None: nobody)."""
    lease = read_or_none(coordination.read_namespaced_lease, LEASE, namespace)
    return None if lease is None else holder_of(lease, _now())


class Renewal:
    """Renews a held Lease every INTERVAL seconds in a daemon thread until stopped."""

    def __init__(
        self,
        coordination: k8s.CoordinationV1Api,
        namespace: str,
        lease: k8s.V1Lease,
        interval: float,
    ) -> None:
        self.coordination, self.namespace, self.lease = coordination, namespace, lease
        self.interval = interval
        self.lost = ""  # why the lock was lost, if it was
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploy-lock", daemon=True)

    def start(self) -> Renewal:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.lease.spec.renew_time = _now()
            try:
                self.lease = self.coordination.replace_namespaced_lease(
                    LEASE, self.namespace, self.lease
                )
            except ApiException as exc:
                if exc.status in (404, CONFLICT):
                    self.lost = f"taken over or deleted ({describe_error(exc)})"
                    return
            except TRANSPORT_ERRORS:
                continue  # the next renewal may get through before the lease expires

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def release(coordination: k8s.CoordinationV1Api, namespace: str, lease: k8s.V1Lease) -> None:
    """Give the lock back (holder cleared); a warning when that is impossible."""
    lease.spec.holder_identity = None
    lease.spec.renew_time = _now()
    try:
        coordination.replace_namespaced_lease(LEASE, namespace, lease)
    except TRANSPORT_ERRORS as exc:
        warn(
            f"Could not release the deploy lock ({describe_error(exc)}); it expires by itself "
            f"within {DURATION_SECONDS} s."
        )


@contextmanager
def held(
    k: Kube,
    namespace: str,
    env: str,
    who: str,
    wait: float = 0.0,
    interval: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    renew_every: float = RENEW_SECONDS,
) -> Iterator[k8s.V1Lease | None]:
    """Hold the deploy lock of NAMESPACE as WHO for the block (the Lease is yielded).

    A held lock is retried every INTERVAL seconds (RETRY_SECONDS) for up to WAIT seconds, with
    progress; Busy when it is still held after that.
    """
    got = try_acquire(k, namespace, env, who)
    if isinstance(got, Holder) and wait > 0:
        started = time.monotonic()
        with tracker() as progress:

            def attempt() -> k8s.V1Lease | Holder | None:
                result = try_acquire(k, namespace, env, who)
                if isinstance(result, Holder):
                    waited = time.monotonic() - started
                    progress.update(
                        "lock",
                        f"lease/{LEASE}: held by {result} (waiting, at most {wait:.0f} s)",
                        min(waited, wait),
                        wait,
                    )
                return result

            every = min(interval or RETRY_SECONDS, wait)
            got = poll(attempt, lambda r: not isinstance(r, Holder), wait, every, sleep)
    if isinstance(got, Holder):
        raise Busy(got)
    if got is None:
        yield None
        return
    renewal = Renewal(k.coordination, namespace, got, renew_every).start()
    try:
        yield got
    finally:
        renewal.stop()
        if renewal.lost:
            warn(f"The deploy lock was lost while this deploy ran: {renewal.lost}.")
        else:
            release(k.coordination, namespace, renewal.lease)


@contextmanager
def exclusive(k: Kube, namespace: str, env: str, action: str, wait: float) -> Iterator[None]:
    """`held` for a person's deploy: waits up to WAIT seconds, then one line naming the holder."""
    try:
        with held(k, namespace, env, identity(action), wait=wait):
            yield
    except Busy as busy:
        raise Exit(
            f"Another deploy holds {namespace} ({busy.holder}) after waiting {wait:.0f} s; "
            "try again when it is done (`invoke autoupdate.status` shows auto-update's)."
        ) from None
