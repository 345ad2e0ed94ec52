"""The release ledger, the prod gate and `releases.record`, on the fake API server (RBAC as
kube-apiserver enforces it; pods simulated, their image IDs as a kubelet reports them)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import ExitStack

import pytest
from invoke import Context, Exit, MockContext, Result
from kubernetes.client.exceptions import ApiException
from support.clock import FakeClock
from support.fakeapi.k3s import Cluster, config, prepare, rendered
from support.mockrun import commands

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release import verify
from desbordante_ops.cluster.release.context import Options, Release, check_tag
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.ledger import (
    LEDGER,
    SYSTEM_NAMESPACE,
    Record,
    ledger,
    write_entry,
)
from desbordante_ops.cluster.release.record import record_plan
from desbordante_ops.core import plan

STAGE, PROD = "desbordante-stage", "desbordante-prod"
TAG = "v1.4.0"
REPO = "ghcr.io/desbordante/desbordante-backend"
LOCAL_ID = "sha256:" + "cd" * 32


def release(
    k3s: Cluster,
    env: str,
    tag: str = TAG,
    c: Context | None = None,
    yes: bool = True,
    confirm: Callable[[str], str] = input,
) -> Release:
    options = Options(yes=yes, timeout=120, clock=FakeClock(), confirm=confirm)
    return Release(c or Context(), config(env), k3s.admin, tag, rendered(env, tag), options)


def on_stage(k3s: Cluster, tag: str = TAG) -> Release:
    """TAG deployed to stage (and so verified and recorded), prod prepared."""
    prepare(k3s.admin, "stage")
    prepare(k3s.admin, "prod")
    x = release(k3s, "stage", tag)
    deploy_release(x)
    return x


def crictl(image_id: str) -> MockContext:
    """The k3s server's `crictl inspecti` answering IMAGE_ID for any image."""
    return MockContext(run={re.compile(r".*crictl inspecti .*"): Result(image_id)}, repeat=True)


# --- the ledger ----------------------------------------------------------------------------------


def test_a_stage_deploy_records_the_image_the_kubelet_reports_and_its_verify_job(
    k3s: Cluster,
) -> None:
    x = on_stage(k3s)
    entry = ledger(k3s.admin.core)[f"{STAGE}.{TAG}"]
    pods = k3s.server.all("Pod", STAGE, f"{names.COMPONENT_LABEL}={names.API}")
    reported = pods[0]["status"]["containerStatuses"][0]["imageID"]
    assert entry.image_id == reported and entry.image == x.image
    assert entry.verified_by == x.rendered.verify_job and entry.verified_at


def test_devops_may_read_the_ledger_but_not_write_it_nor_pod_statuses(k3s: Cluster) -> None:
    on_stage(k3s)
    devops = k3s.grant("devops")
    assert ledger(devops.core)  # reads it
    forged = Record(STAGE, "v9.9.9", "x", "sha256:" + "00" * 32, "now", "me", "verify-x", "now")
    with pytest.raises(ApiException) as denied:
        write_entry(devops.core, forged)
    assert denied.value.status == 403
    pod = k3s.server.all("Pod", STAGE)[0]["metadata"]["name"]
    with pytest.raises(ApiException) as status:
        devops.core.patch_namespaced_pod_status(pod, STAGE, {"status": {"phase": "x"}})
    assert status.value.status == 403


def test_a_viewer_cannot_read_the_ledger_and_is_told_so(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    with pytest.raises(Exit, match="may not read the release ledger"):
        ledger(k3s.grant("viewer").core)


def test_a_failed_verify_leaves_the_ledger_without_the_release(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    k3s.kubelet.behave("verify-", job="fail", logs="verify: upload FAILED: 507\n")
    with pytest.raises(Exit, match="upload FAILED"):
        deploy_release(release(k3s, "stage"))
    assert f"{STAGE}.{TAG}" not in ledger(k3s.admin.core)


# --- the prod gate ------------------------------------------------------------------------------


def test_prod_refuses_a_sha_tag_before_reading_anything(k3s: Cluster) -> None:
    before = len(k3s.server.requests)
    with pytest.raises(Exit, match="only a release tag"):
        check_tag(config("prod"), "3f2a9c1")
    assert len(k3s.server.requests) == before


def test_prod_refuses_a_release_stage_never_ran(k3s: Cluster) -> None:
    on_stage(k3s)
    with pytest.raises(Exit, match=r"v1\.5\.0 never ran on stage"):
        deploy_release(release(k3s, "prod", "v1.5.0"), dry_run=True)


def test_prod_refuses_a_stage_record_that_is_not_verified(k3s: Cluster) -> None:
    prepare(k3s.admin, "prod")
    write_entry(
        k3s.admin.core,
        Record(
            STAGE,
            TAG,
            f"{REPO}:{TAG}",
            f"{REPO}@sha256:" + "ab" * 32,
            "2026-11-20T10:00:00Z",
            "admin",
        ),
    )
    with pytest.raises(Exit, match="never verified there"):
        deploy_release(release(k3s, "prod"), dry_run=True)


def test_a_forged_entry_in_the_stage_namespace_is_ignored_by_prod(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    prepare(k3s.admin, "prod")
    devops = k3s.grant("devops")
    forged = json.dumps(
        {
            "image": "x",
            "image_id": f"{REPO}@sha256:" + "ab" * 32,
            "deployed_at": "x",
            "by": "me",
            "verified_by": "v",
            "verified_at": "t",
        }
    )
    devops.core.create_namespaced_config_map(
        STAGE, {"metadata": {"name": LEDGER}, "data": {f"{STAGE}.{TAG}": forged}}
    )
    with pytest.raises(Exit, match=f"{TAG} never ran on stage"):
        deploy_release(release(k3s, "prod"), dry_run=True)


def test_prod_deploys_exactly_the_digest_stage_ran_after_a_typed_confirmation(
    k3s: Cluster,
) -> None:
    on_stage(k3s)
    digest = ledger(k3s.admin.core)[f"{STAGE}.{TAG}"].image_id
    asked: list[str] = []

    def typed(question: str) -> str:
        asked.append(question)
        return TAG

    x = release(k3s, "prod", yes=False, confirm=typed)
    with plan.watching() as seen:
        deploy_release(x, dry_run=True)
        assert asked == []  # a dry run never asks
        deploy_release(x)
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    assert ("ask", f"type {TAG} to confirm (--yes skips it)") in real.ran
    assert any(a == "check" and "prod gate" in t and digest in t for a, t in real.rows)
    api = k3s.server.get("Deployment", names.API, PROD)
    assert api is not None
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == digest
    assert TAG in asked[0]
    assert ledger(k3s.admin.core)[f"{PROD}.{TAG}"].verified


def test_a_wrong_answer_deploys_nothing_to_prod(k3s: Cluster) -> None:
    on_stage(k3s)
    with pytest.raises(Exit, match="Not confirmed"):
        deploy_release(release(k3s, "prod", yes=False, confirm=lambda question: "yes"))
    assert k3s.server.all("Deployment", PROD) == []


def test_prod_compares_a_local_image_id_with_the_image_in_k3s(k3s: Cluster) -> None:
    k3s.kubelet.image_ids[f"{REPO}:{TAG}"] = LOCAL_ID  # loaded into k3s without a registry
    on_stage(k3s)
    c = crictl(LOCAL_ID)
    deploy_release(release(k3s, "prod", c=c), dry_run=True)
    assert commands(c)[-1].endswith(
        f"crictl inspecti -o go-template --template '{{{{.status.id}}}}' {REPO}:{TAG}"
    )
    with pytest.raises(Exit, match=r"local image sha256:cdcdcdcdcdcd .* has sha256:efefefefefef"):
        deploy_release(release(k3s, "prod", c=crictl("sha256:" + "ef" * 32)), dry_run=True)


# --- releases.record ----------------------------------------------------------------------------


def test_record_verifies_what_runs_then_records_it_and_its_dry_run_is_its_plan(
    k3s: Cluster,
) -> None:
    prepare(k3s.admin, "stage")
    devops = k3s.grant("devops")
    deploy_release(
        Release(
            Context(),
            config("stage"),
            devops,
            TAG,
            rendered("stage", TAG),
            Options(yes=True, timeout=120, clock=FakeClock()),
        )
    )
    assert ledger(k3s.admin.core) == {}  # devops may not write it
    cfg = config("stage")
    with plan.watching() as seen:
        plan.execute(record_plan(Context(), cfg, k3s.admin, TAG), dry_run=True)
        assert ledger(k3s.admin.core) == {}
        plan.execute(record_plan(Context(), cfg, k3s.admin, TAG))
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    assert [a for a, _ in real.ran] == ["run", "add"]
    assert ledger(k3s.admin.core)[f"{STAGE}.{TAG}"].verified


def test_record_refuses_when_verify_fails(k3s: Cluster) -> None:
    on_stage(k3s)
    k3s.server.remove("ConfigMap", LEDGER, SYSTEM_NAMESPACE)
    k3s.kubelet.behave("verify-", job="fail", logs="verify: task FAILED: no worker\n")
    with pytest.raises(Exit, match="no worker"):
        plan.execute(record_plan(Context(), config("stage"), k3s.admin, TAG))
    assert ledger(k3s.admin.core) == {}


def test_pods_running_different_images_for_one_tag_are_not_recorded(k3s: Cluster) -> None:
    on_stage(k3s)
    pod = k3s.server.all("Pod", STAGE, f"{names.COMPONENT_LABEL}={names.WORKER}")[0]
    pod["status"]["containerStatuses"][0]["imageID"] = f"{REPO}@sha256:" + "99" * 32
    k3s.server.seed(pod)
    with pytest.raises(Exit, match="different images"):
        plan.execute(record_plan(Context(), config("stage"), k3s.admin, TAG))


def in_prod_by_devops(k3s: Cluster) -> tuple[Kube, str]:
    """TAG on stage (by an admin), then in prod by a devops of prod, who may not record it:
    the devops connection and the digest reference stage's record names (what prod runs)."""
    on_stage(k3s)
    devops = k3s.grant("devops", env="prod")
    options = Options(yes=True, timeout=120, clock=FakeClock())
    deploy_release(Release(Context(), config("prod"), devops, TAG, rendered("prod", TAG), options))
    assert f"{PROD}.{TAG}" not in ledger(k3s.admin.core)
    return devops, ledger(k3s.admin.core)[f"{STAGE}.{TAG}"].image_id


def test_record_finds_a_prod_release_by_the_digest_it_is_pinned_to(k3s: Cluster) -> None:
    """Prod runs IMAGE@sha256:... (never IMAGE:TAG): the admin's record verifies and records
    that image, the one stage's record names for TAG."""
    _, digest = in_prod_by_devops(k3s)
    cfg = config("prod")
    with plan.watching() as seen:
        plan.execute(record_plan(Context(), cfg, k3s.admin, TAG), dry_run=True)
        plan.execute(record_plan(Context(), cfg, k3s.admin, TAG))
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    assert [a for a, _ in real.ran] == ["run", "add"]
    record = ledger(k3s.admin.core)[f"{PROD}.{TAG}"]
    assert (record.image, record.image_id) == (digest, digest) and record.verified
    job = k3s.server.get("Job", record.verified_by, PROD)
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == digest


def test_verify_without_a_tag_names_the_prod_release_pinned_to_a_digest(k3s: Cluster) -> None:
    """`invoke verify --env prod` by a devops: the tag of the digest prod runs is read from the
    ledger, and the Job runs that very image."""
    devops, digest = in_prod_by_devops(k3s)
    with ExitStack() as stack:
        plan.execute(verify.verify_plan(Context(), config("prod"), devops, None, stack))
    outcome = verify.last(k3s.admin.core, PROD)
    assert outcome is not None and outcome.passed and outcome.release == TAG
    job = k3s.server.get("Job", outcome.job, PROD)
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == digest


def test_a_release_whose_verify_failed_on_stage_is_refused_by_prod_and_one_that_passed_is_taken(
    k3s: Cluster,
) -> None:
    """The verify Job's lifecycle end to end: stage's verify fails -> no record -> prod refuses
    the tag; stage deploys it again and verify passes -> recorded -> prod accepts it."""
    prepare(k3s.admin, "stage")
    prepare(k3s.admin, "prod")
    k3s.kubelet.behave("verify-", job="fail", logs="verify: task FAILED: no worker answered\n")
    with pytest.raises(Exit, match="no worker answered"):
        deploy_release(release(k3s, "stage"))
    with pytest.raises(Exit, match=f"{TAG} never ran on stage"):
        deploy_release(release(k3s, "prod"), dry_run=True)
    k3s.kubelet.behaviours.clear()
    deploy_release(release(k3s, "stage"))
    deploy_release(release(k3s, "prod"))
    assert ledger(k3s.admin.core)[f"{PROD}.{TAG}"].verified
