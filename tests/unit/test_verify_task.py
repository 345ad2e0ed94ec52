"""`invoke verify --env stage`: the release's verify Job run on demand (release/verify.py,
`verify_plan`), on the fake API server: the dry run is the plan the real run executes, a devops
kubeconfig may run it (over HTTPS, through the task), a viewer is refused in one line, and
nothing deployed or no cluster is a plan row, not a traceback.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from invoke import Context, Exit
from support.clock import FakeClock
from support.fakeapi.connect import grant, kube_for
from support.fakeapi.k3s import Cluster, config, prepare, rendered
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release import verify
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.lock import LEASE
from desbordante_ops.core import plan
from desbordante_ops.tasks import verify as verify_tasks

TAG = "v1.4.0"
STAGE = "desbordante-stage"
TITLE = f"verify {STAGE}"


def deploy(k: Kube) -> Release:
    """Stage prepared and TAG deployed to it (which runs the verify Job once)."""
    prepare(k, "stage")
    options = Options(yes=True, timeout=120, clock=FakeClock())
    x = Release(Context(), config("stage"), k, TAG, rendered("stage", TAG), options)
    deploy_release(x)
    return x


def stored(server: FakeApiServer) -> dict[object, str]:
    return {key: json.dumps(obj, sort_keys=True) for key, obj in server.objects.items()}


def verify_in_process(k: Kube, dry_run: bool) -> None:
    """What `invoke verify --env stage` does, with the connection K."""
    with ExitStack() as stack:
        plan.execute(verify.verify_plan(Context(), config("stage"), k, None, stack), dry_run)


def test_a_devops_kubeconfig_runs_it_and_the_dry_run_is_the_plan_it_runs(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = deploy(kube_for(fake_api))
    monkeypatch.setenv("KUBECONFIG_PATH", str(grant(admin, tmp_path, "devops")))
    first = verify.last(admin.core, STAGE)
    assert first is not None and first.passed
    asked = len(fake_api.requests)
    with plan.watching() as seen:
        before = stored(fake_api)
        verify_tasks.verify(Context(), env="stage", dry_run=True)
        assert stored(fake_api) == before  # the server checked the Job, kept nothing
        verify_tasks.verify(Context(), env="stage")
    dry, real = (s for s in seen if s.title == TITLE)
    assert dry.rows == real.rows and dry.ran == []
    assert (
        real.ran
        == real.runnable
        == dry.runnable
        == [
            ("take", f"the deploy lock (Lease {STAGE}/{LEASE})"),
            ("run", verify.describe_job(x.rendered)),
        ]
    )
    ours = fake_api.requests[asked:]
    dry_runs = [r for r in ours if "dryRun=All" in r.path and "/jobs/" in r.path]
    assert len(dry_runs) == 1 and dry_runs[0].user.endswith(":access-jane")
    assert dry_runs[0].code == 200  # a devops may create the Job: the server said so
    assert {r.user for r in ours} == {dry_runs[0].user}  # all of it as the devops user
    outcome = verify.last(admin.core, STAGE)
    assert outcome is not None and outcome.passed
    assert (outcome.release, outcome.job) == (TAG, x.rendered.verify_job)
    lease = fake_api.get("Lease", LEASE, STAGE)
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released


def test_a_viewer_is_refused_in_one_line_and_changes_nothing(k3s: Cluster) -> None:
    deploy(k3s.admin)
    viewer = k3s.grant("viewer")
    before = stored(k3s.server)
    asked = len(k3s.server.requests)
    verify_in_process(viewer, dry_run=True)  # prints the refusal, exits 0
    with pytest.raises(Exit) as raised:
        verify_in_process(viewer, dry_run=False)
    message = str(raised.value.message)
    assert "\n" not in message
    assert message.startswith(
        f"This kubeconfig may not use the deploy lock (Lease {STAGE}/{LEASE}) in {STAGE}: it is "
        "a viewer's, and viewers cannot run verify; "
    )
    assert "`invoke access.grant --name NAME --role devops --env stage`" in message
    assert stored(k3s.server) == before
    writes = [
        r
        for r in k3s.server.requests[asked:]
        if r.method != "GET" and "selfsubjectaccessreviews" not in r.path
    ]
    assert writes == []


def test_nothing_deployed_is_a_refusal_row(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    with plan.watching() as seen:
        verify_in_process(k3s.admin, dry_run=True)
    assert seen[0].rows == [("run", f"the verify Job of {STAGE}")] and seen[0].ran == []
    with pytest.raises(Exit, match="Nothing runs in desbordante-stage to verify; deploy it first"):
        verify_in_process(k3s.admin, dry_run=False)


def test_without_a_cluster_the_dry_run_says_why_and_the_run_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "none.kubeconfig"
    monkeypatch.setenv("KUBECONFIG_PATH", str(missing))
    with plan.watching() as seen:
        verify_tasks.verify(Context(), env="stage", dry_run=True)
    ((action, target),) = seen[0].rows
    assert action == "unknown" and target.startswith(
        f"the cluster of stage: No kubeconfig at {missing}"
    )
    with pytest.raises(Exit, match="Cannot go on: the cluster of stage: No kubeconfig at"):
        verify_tasks.verify(Context(), env="stage")
