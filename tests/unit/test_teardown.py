"""deploy.teardown on the fake API server: deletes what is deployed (found by label, whatever
release it was), keeps data unless a confirmed --purge-data, asks before anything is deleted;
the dry run is the plan the run executes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from invoke import Context, Exit
from support.clock import FakeClock
from support.fakeapi.k3s import Cluster, config, prepare, rendered

from desbordante_ops.cluster.access import DEVOPS_RULES
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release.apply import PRUNE_KINDS
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.teardown import PURGED_KINDS, teardown_plan
from desbordante_ops.core import plan
from desbordante_ops.core.plan import Plan

NS = "desbordante-stage"
OLD = "v0.1.0"  # deployed by an older release: HEAD renders another tag and hash


def deployed(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    options = Options(yes=True, timeout=120, clock=FakeClock())
    deploy_release(
        Release(Context(), config("stage"), k3s.admin, OLD, rendered("stage", OLD), options)
    )


def twice(build: Callable[[], Plan]) -> tuple[plan.Seen, plan.Seen]:
    with plan.watching() as seen:
        plan.execute(build(), dry_run=True)
        plan.execute(build())
    return seen[0], seen[1]


def teardown(
    k: Kube, purge: bool = False, yes: bool = False, answer: str = "", terminal: bool = True
) -> Plan:
    return teardown_plan(
        k,
        config("stage"),
        purge,
        yes,
        ask=lambda question: answer,
        interactive=lambda: terminal,
        sleep=lambda seconds: None,
    )


def ours(k3s: Cluster) -> list[str]:
    """Every object of a kind teardown deletes that carries our instance label."""
    found = []
    for kind in PRUNE_KINDS:
        found += [
            f"{kind.kind}/{o['metadata']['name']}"
            for o in k3s.server.all(kind.kind, NS, names.INSTANCE_LABEL)
        ]
    return found


def test_teardown_deletes_the_deployed_release_by_label_and_keeps_data(k3s: Cluster) -> None:
    deployed(k3s)
    assert any(name.startswith(f"Job/{names.MIGRATE}-v0-1-0-") for name in ours(k3s))
    dry, real = twice(lambda: teardown(k3s.admin))
    assert dry.rows == real.rows and real.ran == real.runnable
    assert ("keep", f"volume claims, Secrets and namespace {NS}") in real.rows
    assert ours(k3s) == []
    assert k3s.server.all("Pod", NS) == []  # their pods went with them
    assert k3s.server.get("PersistentVolumeClaim", names.UPLOADS_PVC, NS) is not None
    assert k3s.server.get("Secret", names.PostgresSecret.NAME, NS) is not None
    assert k3s.server.get("Namespace", NS) is not None


def test_the_dry_run_lists_every_object_the_run_deletes(k3s: Cluster) -> None:
    deployed(k3s)
    listed = {
        target
        for action, target in twice(lambda: teardown(k3s.admin))[0].rows
        if action == "delete"
    }
    assert len(listed) >= 30 and f"Deployment {NS}/api" in listed


def test_purge_asks_first_then_deletes_the_workloads_and_the_namespace(k3s: Cluster) -> None:
    deployed(k3s)
    dry, real = twice(lambda: teardown(k3s.admin, purge=True, answer=NS))
    assert dry.rows == real.rows and real.ran == real.runnable
    assert real.ran[0] == ("ask", f"type {NS} to confirm the purge (--yes skips it)")
    assert real.ran[-1] == ("delete", f"namespace {NS} and everything in it")
    # What goes with the namespace is listed, people's access included.
    assert any("Secret" in target for _, target in real.rows)
    assert k3s.server.get("Namespace", NS) is None
    assert k3s.server.get("Secret", names.PostgresSecret.NAME, NS) is None


@pytest.mark.parametrize("answer", ["", "yes", "desbordante-prod"])
def test_a_wrong_answer_deletes_nothing(k3s: Cluster, answer: str) -> None:
    deployed(k3s)
    before = ours(k3s)
    with pytest.raises(Exit, match="Not confirmed"):
        plan.execute(teardown(k3s.admin, purge=True, answer=answer))
    assert ours(k3s) == before


def test_no_terminal_refuses_before_deleting_anything_unless_yes(k3s: Cluster) -> None:
    deployed(k3s)
    before = ours(k3s)
    with pytest.raises(Exit, match="there is no terminal: pass --yes"):
        plan.execute(teardown(k3s.admin, purge=True, terminal=False))
    assert ours(k3s) == before
    plan.execute(teardown(k3s.admin, purge=True, yes=True, terminal=False))
    assert k3s.server.get("Namespace", NS) is None


def test_devops_may_delete_every_kind_teardown_deletes(k3s: Cluster) -> None:
    writable = {
        res for _, resources, verbs in DEVOPS_RULES if "delete" in verbs for res in resources
    }
    assert {kind.plural for kind in PRUNE_KINDS} <= writable
    deployed(k3s)
    devops = k3s.grant("devops")
    plan.execute(teardown(devops))
    assert ours(k3s) == []


def test_without_traefiks_crds_there_are_no_middlewares_to_delete(k3s: Cluster) -> None:
    deployed(k3s)
    k3s.server.crds.clear()
    _, real = twice(lambda: teardown(k3s.admin))
    assert ("skip", "Middleware: not served by this cluster (none to delete)") in real.rows


def test_a_purge_lists_the_kinds_that_go_with_the_namespace() -> None:
    assert {"Secret", "PersistentVolumeClaim", "ServiceAccount"} <= {k.kind for k in PURGED_KINDS}
