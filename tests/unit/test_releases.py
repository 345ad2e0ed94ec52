"""The release ledger and the prod gate, through the real kubernetes client against the fake API
server (RBAC enforced as kube-apiserver does; pods' image IDs seeded as a kubelet writes them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, MockContext, Result
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from support.fakeapi import FakeApiServer
from support.fakeapi_kube import config_for, connect, grant
from support.mockrun import commands
from support.plans import plan_cells

from desbordante_ops.cluster import deploy, kube, names, releases
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.secrets import SPECS
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import releases as release_tasks

STAGE, PROD = "desbordante-stage", "desbordante-prod"
TAG = "v1.4.0"
REPO = "ghcr.io/desbordante/desbordante-backend"
IMAGE = f"{REPO}:{TAG}"
DIGEST = "sha256:" + "ab" * 32
LOCAL_ID = "sha256:" + "cd" * 32


def pod(name: str, image: str, image_id: str, namespace: str = STAGE) -> dict[str, Any]:
    """A running pod of ours as the kubelet reports it (status.containerStatuses[].imageID)."""
    labels = {names.PART_OF_LABEL: names.APP_NAME, names.COMPONENT_LABEL: names.API}
    status = {"name": "api", "image": image, "imageID": image_id, "ready": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "api", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [{**status, "restartCount": 0}]},
    }


def recorded(fake_api: FakeApiServer) -> dict[str, dict[str, str]]:
    cm = fake_api.get("ConfigMap", releases.LEDGER, releases.SYSTEM_NAMESPACE)
    return {key: json.loads(value) for key, value in ((cm or {}).get("data") or {}).items()}


def record_as_admin(fake_api: FakeApiServer, admin_kubeconfig: Path, image_id: str) -> None:
    fake_api.seed(pod("api-1", IMAGE, image_id))
    cfg = config_for(admin_kubeconfig)
    assert releases.record_release(connect(admin_kubeconfig), cfg, STAGE, IMAGE, TAG)


def crictl(image_id: str) -> MockContext:
    """The k3s server's `crictl inspecti` answering IMAGE_ID for any image."""
    return MockContext(run={re.compile(r".*crictl inspecti .*"): Result(image_id)}, repeat=True)


def never_asked(question: str) -> str:
    raise AssertionError(f"asked {question!r}")


def test_admin_records_the_image_id_the_kubelet_reports(
    fake_api: FakeApiServer, admin: kube.Kube, admin_kubeconfig: Path
) -> None:
    fake_api.seed(pod("api-old", f"{REPO}:v1.3.9", f"{REPO}@sha256:" + "99" * 32))
    record_as_admin(fake_api, admin_kubeconfig, f"docker-pullable://{REPO}@{DIGEST}")
    entry = recorded(fake_api)[f"{STAGE}.{TAG}"]
    assert entry["image"] == IMAGE
    assert entry["image_id"] == f"{REPO}@{DIGEST}"  # only the pods of IMAGE, runtime scheme cut
    assert entry["by"] == "default"  # the admin kubeconfig's user
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["deployed_at"])


def test_stage_devops_gets_403_on_the_ledger_and_is_told_how_prod_will_accept_it(
    fake_api: FakeApiServer, admin: kube.Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))
    devops = grant(admin, tmp_path, "devops")
    assert not releases.record_release(connect(devops), config_for(devops), STAGE, IMAGE, TAG)
    denied = [r for r in fake_api.requests if r.code == 403]
    assert [(r.method, r.path.split("?")[0]) for r in denied] == [
        ("PATCH", f"/api/v1/namespaces/{releases.SYSTEM_NAMESPACE}/configmaps/{releases.LEDGER}")
    ]
    assert recorded(fake_api) == {}
    out = " ".join(capsys.readouterr().out.split())
    assert f"prod will not accept {TAG} until a cluster admin records it" in out
    assert f"`invoke releases.record --env stage --tag {TAG}`" in out


def test_devops_cannot_write_the_image_ids_the_kubelet_reports(
    fake_api: FakeApiServer, admin: kube.Kube, tmp_path: Path
) -> None:
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))
    devops = connect(grant(admin, tmp_path, "devops"))
    forged = {"status": {"containerStatuses": [{"name": "api", "imageID": "x"}]}}
    for patch in (devops.core.patch_namespaced_pod_status, devops.core.patch_namespaced_pod):
        with pytest.raises(ApiException) as info:
            patch("api-1", STAGE, forged)
        assert info.value.status == 403


def test_a_forged_entry_in_the_stage_namespace_is_ignored_by_prod(
    fake_api: FakeApiServer, admin: kube.Kube, tmp_path: Path
) -> None:
    devops = connect(grant(admin, tmp_path, "devops"))
    forged = json.dumps({"image": IMAGE, "image_id": f"{REPO}@{DIGEST}", "deployed_at": "x"})
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name=releases.LEDGER),
        data={TAG: forged, f"{STAGE}.{TAG}": forged},
    )
    devops.core.create_namespaced_config_map(STAGE, body)  # devops may write its namespace
    with pytest.raises(Exit, match=f"{TAG} never ran on stage"):
        releases.check_prod_rules(
            MockContext(), admin.core, STAGE, TAG, IMAGE, yes=True, confirm=never_asked
        )


def test_prod_refuses_a_tag_never_recorded_for_stage(
    fake_api: FakeApiServer, admin: kube.Kube, admin_kubeconfig: Path
) -> None:
    record_as_admin(fake_api, admin_kubeconfig, f"{REPO}@{DIGEST}")
    with pytest.raises(Exit, match=r"v1\.5\.0 never ran on stage"):
        releases.check_prod_rules(
            MockContext(), admin.core, STAGE, "v1.5.0", f"{REPO}:v1.5.0", True, never_asked
        )


def test_prod_refuses_a_sha_tag_before_reading_anything(
    fake_api: FakeApiServer, admin: kube.Kube
) -> None:
    before = len(fake_api.requests)
    with pytest.raises(Exit, match="only a release tag"):
        releases.check_prod_rules(
            MockContext(), admin.core, STAGE, "3f2a9c1", f"{REPO}:3f2a9c1", True, never_asked
        )
    assert len(fake_api.requests) == before


def test_prod_runs_the_recorded_digest_not_the_tag(
    fake_api: FakeApiServer, admin: kube.Kube, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    record_as_admin(fake_api, admin_kubeconfig, f"{REPO}@{DIGEST}")
    prod_devops = connect(grant(admin, tmp_path, "devops", env="prod"))  # reads the ledger
    asked: list[str] = []

    def typed(question: str) -> str:
        asked.append(question)
        return TAG

    pinned = releases.check_prod_rules(
        MockContext(), prod_devops.core, STAGE, TAG, IMAGE, False, typed
    )
    assert pinned == f"{REPO}@{DIGEST}"
    assert TAG in asked[0] and "sha256:abababababab" in asked[0]


def test_prod_compares_a_local_image_id_with_the_image_in_k3s(
    fake_api: FakeApiServer, admin: kube.Kube, admin_kubeconfig: Path
) -> None:
    record_as_admin(fake_api, admin_kubeconfig, LOCAL_ID)
    c = crictl(LOCAL_ID)
    assert releases.check_prod_rules(c, admin.core, STAGE, TAG, IMAGE, True, never_asked) == IMAGE
    *_, command = commands(c)
    assert command.endswith(
        f"crictl inspecti -o go-template --template '{{{{.status.id}}}}' {IMAGE}"
    )
    rebuilt = crictl("sha256:" + "ef" * 32)
    with pytest.raises(Exit, match=r"local image sha256:cdcdcdcdcdcd .* has sha256:efefefefefef"):
        releases.check_prod_rules(rebuilt, admin.core, STAGE, TAG, IMAGE, True, never_asked)


def test_a_viewer_cannot_read_the_ledger_and_is_told_so(admin: kube.Kube, tmp_path: Path) -> None:
    viewer = connect(grant(admin, tmp_path, "viewer"))
    with pytest.raises(Exit, match="may not read the release ledger"):
        releases.ledger(viewer.core)


def test_pods_running_different_images_for_one_tag_are_not_recorded(
    fake_api: FakeApiServer, admin: kube.Kube, admin_kubeconfig: Path
) -> None:
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))
    fake_api.seed(pod("api-2", IMAGE, f"{REPO}@sha256:" + "12" * 32))
    cfg = config_for(admin_kubeconfig)
    assert not releases.record_release(admin, cfg, STAGE, IMAGE, TAG)
    assert not releases.record_release(admin, cfg, PROD, IMAGE, TAG)  # no pods at all
    assert recorded(fake_api) == {}


@pytest.fixture
def admin_tasks(monkeypatch: pytest.MonkeyPatch, admin_kubeconfig: Path) -> None:
    """The tasks read stage's settings with the admin kubeconfig and this image name."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    monkeypatch.setenv("IMAGE_NAME", REPO)


@pytest.mark.usefixtures("admin_tasks")
def test_the_record_task_is_how_an_admin_records_a_release(
    fake_api: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(Exit) as failed:  # nothing runs the release yet
        release_tasks.record(MockContext(), env="stage", tag=TAG)
    assert failed.value.code == 1
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))
    release_tasks.record(MockContext(), env="stage", tag=TAG)
    assert recorded(fake_api)[f"{STAGE}.{TAG}"]["image_id"] == f"{REPO}@{DIGEST}"
    release_tasks.list(MockContext(), env="stage")
    assert TAG in capsys.readouterr().out


@pytest.mark.usefixtures("wide_console", "admin", "admin_tasks")
def test_record_dry_run_says_what_it_would_write_and_writes_nothing(
    fake_api: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = f"ConfigMap {releases.SYSTEM_NAMESPACE}/{releases.LEDGER}"
    seen = len(fake_api.requests)
    release_tasks.record(MockContext(), env="stage", tag=TAG, dry_run=True)  # exits 0
    why = f"no pod in {STAGE} reports an image ID for {IMAGE}"
    assert plan_cells(capsys.readouterr().out) == [
        ("skip", f"{TAG} is not recorded ({why}): the real run fails")
    ]
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))
    release_tasks.record(MockContext(), env="stage", tag=TAG, dry_run=True)
    assert plan_cells(capsys.readouterr().out) == [
        ("create", f"namespace {releases.SYSTEM_NAMESPACE}"),
        ("create", ledger),
        (
            "add",
            f"{ledger} key {STAGE}.{TAG}: image {IMAGE}, image ID {REPO}@{DIGEST[:19]}, by default",
        ),
    ]
    assert [r.method for r in fake_api.requests[seen:] if r.method != "GET"] == []
    assert recorded(fake_api) == {}
    release_tasks.record(MockContext(), env="stage", tag=TAG)
    release_tasks.record(MockContext(), env="stage", tag=TAG, dry_run=True)
    assert plan_cells(capsys.readouterr().out)[-1] == (
        "keep",
        f"{ledger} key {STAGE}.{TAG} (already {REPO}@{DIGEST[:19]})",
    )


# --- deploy as stage devops: the release goes live, the ledger says no ---------------------------


def workloads(fake_api: FakeApiServer, job: str) -> None:
    """Secrets, finished migrate Job and ready workloads, as controllers would report them."""
    meta = {"namespace": STAGE}
    template = {"spec": {"containers": [{"name": "c", "image": IMAGE}]}}
    spec = {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": template}
    ready = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    for secret in SPECS:
        fake_api.seed(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret.name, **meta}}
        )
    complete = {"conditions": [{"type": "Complete", "status": "True"}]}
    fake_api.seed(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, **meta},
            "spec": {"template": template},
            "status": complete,
        }
    )
    kinds = (
        ("Deployment", names.DEPLOYMENTS, {**ready, "availableReplicas": 1}),
        (
            "StatefulSet",
            names.STATEFULSETS,
            {**ready, "currentRevision": "r", "updateRevision": "r"},
        ),
    )
    for kind, workload_names, status in kinds:
        for name in workload_names:
            fake_api.seed(
                {
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "metadata": {"name": name, "generation": 1, **meta},
                    "spec": spec,
                    "status": status,
                }
            )
    fake_api.seed(pod("api-1", IMAGE, f"{REPO}@{DIGEST}"))


def test_a_stage_deploy_by_devops_succeeds_and_says_prod_will_not_accept_it(
    fake_api: FakeApiServer, admin: kube.Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = "migrate-v1-4-0-0badc0de"
    workloads(fake_api, job)
    devops = grant(admin, tmp_path, "devops")
    cfg = load_config(
        "stage", flags={"KUBECONFIG_PATH": str(devops), "IMAGE_NAME": REPO}, environ={}
    )
    rendered = Rendered("stage", STAGE, IMAGE, job, "", [])
    kubectl = MockContext(
        run={
            re.compile(r"^kubectl .* diff "): Result(exited=1),
            re.compile(r"^kubectl .* apply "): Result(),
        },
        repeat=True,
    )
    assert deploy.deploy_release(kubectl, cfg, connect(devops), rendered, TAG)
    out = " ".join(capsys.readouterr().out.split())
    assert f"prod will not accept {TAG} until a cluster admin records it" in out
    assert f"{IMAGE} is live in {STAGE}" in out
    assert recorded(fake_api) == {}
