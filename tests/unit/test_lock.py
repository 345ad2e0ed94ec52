"""The deploy lock (a Lease) through the real kubernetes client against the fake API server,
which enforces resourceVersion conflicts (409) and RBAC as kube-apiserver does."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from invoke import Exit
from kubernetes.client.exceptions import ApiException
from support.fakeapi.connect import connect_with, grant
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release import lock

NS = "desbordante-stage"


def lease_spec(fake_api: FakeApiServer) -> dict[str, object]:
    stored = fake_api.get("Lease", lock.LEASE, NS)
    assert stored is not None
    return dict(stored["spec"])


def test_one_holder_at_a_time_and_the_second_sees_who_and_since(
    admin: Kube, fake_api: FakeApiServer
) -> None:
    with lock.held(admin, NS, "stage", "jane@laptop (deploy v1.2.0)"):
        assert lease_spec(fake_api)["holderIdentity"] == "jane@laptop (deploy v1.2.0)"
        with pytest.raises(lock.Busy) as busy, lock.held(admin, NS, "stage", "autoupdate"):
            pytest.fail("two holders at once")
        assert busy.value.holder.identity == "jane@laptop (deploy v1.2.0)"
        assert busy.value.holder.since.endswith("Z")
        holder = lock.current_holder(admin.coordination, NS)
        assert holder is not None and holder.identity.startswith("jane@")
    assert lease_spec(fake_api).get("holderIdentity") is None  # released
    assert lock.current_holder(admin.coordination, NS) is None
    with lock.held(admin, NS, "stage", "autoupdate@server"):  # free again: taken by update
        assert lease_spec(fake_api)["holderIdentity"] == "autoupdate@server"
        assert lease_spec(fake_api)["leaseTransitions"] == 1


def test_an_expired_lease_of_a_dead_holder_is_taken_over(
    admin: Kube, fake_api: FakeApiServer
) -> None:
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC).isoformat().replace("+00:00", ".000000Z")
    fake_api.seed(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lock.LEASE, "namespace": NS},
            "spec": {
                "holderIdentity": "crashed@server",
                "leaseDurationSeconds": 60,
                "acquireTime": long_ago,
                "renewTime": long_ago,
            },
        }
    )
    with lock.held(admin, NS, "stage", "autoupdate@server"):
        assert lease_spec(fake_api)["holderIdentity"] == "autoupdate@server"


def test_of_two_takers_of_a_free_lease_exactly_one_wins(
    admin: Kube, fake_api: FakeApiServer
) -> None:
    """Both read the free Lease; the API server's resourceVersion check lets one update win."""
    with lock.held(admin, NS, "stage", "first"):
        pass  # the Lease now exists, free
    stale = admin.coordination.read_namespaced_lease(lock.LEASE, NS)
    won = lock.try_acquire(admin, NS, "stage", "winner")
    assert not isinstance(won, lock.Holder)
    stale.spec.holder_identity = "loser"
    with pytest.raises(ApiException) as conflict:
        admin.coordination.replace_namespaced_lease(lock.LEASE, NS, stale)
    assert conflict.value.status == 409
    lost = lock.try_acquire(admin, NS, "stage", "late")
    assert isinstance(lost, lock.Holder) and lost.identity == "winner"


def test_the_lease_is_renewed_while_held(admin: Kube, fake_api: FakeApiServer) -> None:
    renewed = threading.Event()
    with lock.held(admin, NS, "stage", "long deploy", renew_every=0.05) as first:
        assert first is not None
        start = first.spec.renew_time
        for _ in range(200):  # bounded: at most 200 waits of 0.05 s
            spec = admin.coordination.read_namespaced_lease(lock.LEASE, NS).spec
            if spec.renew_time > start and spec.holder_identity == "long deploy":
                renewed.set()
                break
            threading.Event().wait(0.05)
    assert renewed.is_set()
    assert lease_spec(fake_api).get("holderIdentity") is None


def test_a_manual_deploy_waits_bounded_then_names_the_holder(
    admin: Kube, capsys: pytest.CaptureFixture[str]
) -> None:
    slept: list[float] = []
    with lock.held(admin, NS, "stage", "autoupdate@server (cycle)"):
        with (
            pytest.raises(lock.Busy),
            lock.held(admin, NS, "stage", "jane", wait=30, sleep=slept.append),
        ):
            pytest.fail("acquired a held lock")
        assert 1 <= len(slept) <= 30 / lock.RETRY_SECONDS + 1
        assert "held by autoupdate@server (cycle) since" in capsys.readouterr().out
        with (
            pytest.raises(Exit, match=r"Another deploy holds desbordante-stage \(autoupdate@"),
            lock.exclusive(admin, NS, "stage", "deploy v1", wait=0),
        ):
            pytest.fail("acquired a held lock")


def test_a_wait_ends_as_soon_as_the_holder_releases(admin: Kube) -> None:
    holding = lock.held(admin, NS, "stage", "autoupdate@server")
    holding.__enter__()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the holder finishes during our first wait
        waits.append(seconds)
        if len(waits) == 1:
            holding.__exit__(None, None, None)

    with lock.held(admin, NS, "stage", "jane", wait=60, sleep=sleep):
        holder = lock.current_holder(admin.coordination, NS)
        assert holder is not None and holder.identity == "jane"
    assert len(waits) == 1


def test_devops_may_take_the_lock(admin: Kube, tmp_path: Path) -> None:
    devops = connect_with(grant(admin, tmp_path, "devops"))
    with lock.held(devops, NS, "stage", "jane"):
        assert lock.current_holder(devops.coordination, NS) is not None


def test_a_kubeconfig_without_lease_rights_gets_one_line(admin: Kube, tmp_path: Path) -> None:
    viewer = connect_with(grant(admin, tmp_path, "viewer"))
    with (
        pytest.raises(Exit, match=r"may not use the deploy lock .*viewers cannot deploy"),
        lock.held(viewer, NS, "stage", "joe"),
    ):
        pytest.fail("a viewer took the lock")


def test_a_namespace_that_does_not_exist_yet_is_deployed_unlocked(admin: Kube) -> None:
    """The first deploy creates the namespace; there is nothing in it a lock could protect."""
    with lock.held(admin, "desbordante-new", "stage", "admin@server (deploy v1)") as lease:
        assert lease is None
