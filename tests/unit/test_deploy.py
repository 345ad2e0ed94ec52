"""deploy: diff before apply, prod rules, migrate job, rollout waits and failure diagnostics.

kubectl is a MockContext (commands are recorded, nothing runs); the cluster API objects are
in-memory fakes. This checks command construction and decisions, not a real rollout.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from invoke import Exit, MockContext, Result
from kubernetes import client as k8s
from support.fake_kube import FakeApps, FakeBatch, FakeCore, FakeRollouts

from desbordante_ops.cluster import deploy as dp
from desbordante_ops.cluster import kube, names
from desbordante_ops.cluster import secrets as cs
from desbordante_ops.cluster.releases import Release, ledger, write_entry
from desbordante_ops.cluster.render import Rendered
from desbordante_ops.cluster.rollout import rollout_of
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig, load_config
from desbordante_ops.tasks import deploy as deploy_tasks

SHA_TAG = "3f2a9c1"
RELEASE = "v1.4.0"
STAGE_NS, PROD_NS = "desbordante-stage", "desbordante-prod"
WORKLOADS = (*names.DEPLOYMENTS, *names.STATEFULSETS)
LOCAL_ID = "sha256:" + "cd" * 32  # an image loaded into k3s without a registry


def stage_ran(core: FakeCore, tag: str) -> None:
    """The release ledger says stage ran TAG as the local image LOCAL_ID."""
    write_entry(core, Release(STAGE_NS, tag, f"img:{tag}", LOCAL_ID, "2026-11-20T10:00:00Z", "a"))


def running(cfg: EnvConfig, tag: str) -> k8s.V1Pod:
    """A pod of the release, with the image ID the kubelet reports."""
    image = f"{cfg.toolkit.IMAGE_NAME}:{tag}"
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="api", image=image)]),
        status=k8s.V1PodStatus(
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="api", image=image, image_id=LOCAL_ID, ready=True, restart_count=0
                )
            ]
        ),
    )


def job_name(tag: str) -> str:
    return f"{names.migrate_job_name(tag)}-0badc0de"


def release(tag: str, cfg: EnvConfig) -> Rendered:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cfg.namespace}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "uploads"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name(tag)}},
    ]
    return Rendered(
        env=cfg.name,
        namespace=cfg.namespace,
        image=f"{cfg.toolkit.IMAGE_NAME}:{tag}",
        migrate_job=job_name(tag),
        text=yaml.safe_dump_all(docs),
        docs=docs,
    )


def cluster(
    tag: str, ready: int = 1, job: str | None = "Complete", core: FakeCore | None = None
) -> kube.Kube:
    jobs = {job_name(tag): job} if job != "missing" else {}
    core = core or FakeCore()
    for env in CLUSTER_ENVS:
        cs.generate(core, FakeApps(), load_config(env, environ={}), f"desbordante-{env}")
    return kube.Kube(
        api_client=None,
        core=core,
        apps=FakeRollouts(dict.fromkeys(WORKLOADS, ready)),
        batch=FakeBatch(jobs),
        rbac=None,
    )


def kubectl_context(diff_exit: int = 1) -> MockContext:
    return MockContext(
        run={
            re.compile(r"^kubectl .* diff -f \S+$"): Result("+ image: new", exited=diff_exit),
            re.compile(r"^kubectl .* apply -f \S+$"): Result("configured"),
            re.compile(r".* crictl inspecti .*"): Result(LOCAL_ID),  # the image id in k3s
        },
        repeat=True,
    )


def commands(c: MockContext) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]


def no_wait() -> dict[str, Any]:
    return {"sleep": lambda s: None}


def test_stage_deploy_diffs_before_apply_and_records_the_release() -> None:
    cfg, k, c = load_config("stage", environ={}), cluster(SHA_TAG), kubectl_context()
    k.core.pods = [running(cfg, SHA_TAG)]
    assert dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait()) is True
    cmds = commands(c)
    assert [cmd.split()[3] for cmd in cmds] == ["diff", "apply"]
    assert cmds[0].split()[-1] == cmds[1].split()[-1]  # the same rendered file
    assert "--kubeconfig" in cmds[0]
    record = ledger(k.core)[f"{STAGE_NS}.{SHA_TAG}"]
    assert record.image == f"{cfg.toolkit.IMAGE_NAME}:{SHA_TAG}" and record.image_id == LOCAL_ID


def test_applied_file_is_the_rendered_manifests() -> None:
    cfg, k = load_config("stage", environ={}), cluster(SHA_TAG)
    seen: dict[str, list[dict[str, Any]]] = {}

    class Spy(MockContext):
        def run(self, command: str, **kw: Any) -> Result:
            if " apply " in command:
                with open(command.split()[-1]) as fh:
                    seen["docs"] = list(yaml.safe_load_all(fh))
            return Result("", exited=1 if " diff " in command else 0)

    dp.deploy_release(Spy(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert seen["docs"] == release(SHA_TAG, cfg).docs


def test_second_deploy_of_same_release_changes_nothing() -> None:
    cfg, k = load_config("stage", environ={}), cluster(SHA_TAG)
    dp.deploy_release(kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    c = kubectl_context(diff_exit=0)
    assert dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait()) is False
    assert [cmd.split()[3] for cmd in commands(c)] == ["diff"]  # no apply


def test_kubectl_diff_error_stops_before_apply() -> None:
    cfg, c = load_config("stage", environ={}), kubectl_context(diff_exit=2)
    with pytest.raises(Exit, match="kubectl diff failed"):
        dp.deploy_release(c, cfg, cluster(SHA_TAG), release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert len(commands(c)) == 1


def test_prod_refuses_a_sha_tag_before_touching_anything() -> None:
    cfg, c = load_config("prod", environ={}), kubectl_context()
    with pytest.raises(Exit, match="only a release tag"):
        dp.deploy_release(c, cfg, cluster(SHA_TAG), release(SHA_TAG, cfg), SHA_TAG, yes=True)
    assert commands(c) == []


def test_prod_refuses_a_release_never_deployed_to_stage() -> None:
    cfg, c = load_config("prod", environ={}), kubectl_context()
    k = cluster(RELEASE)
    stage_ran(k.core, "v1.3.9")
    with pytest.raises(Exit, match="never ran on stage"):
        dp.deploy_release(c, cfg, k, release(RELEASE, cfg), RELEASE, yes=True)
    assert commands(c) == []


def test_prod_needs_the_typed_tag_unless_yes() -> None:
    cfg = load_config("prod", environ={})
    k = cluster(RELEASE)
    stage_ran(k.core, RELEASE)
    c = kubectl_context()
    with pytest.raises(Exit, match="Not confirmed"):
        dp.deploy_release(c, cfg, k, release(RELEASE, cfg), RELEASE, confirm=lambda q: "yes")
    assert [cmd for cmd in commands(c) if cmd.startswith("kubectl")] == []

    def no_tty(question: str) -> str:
        raise EOFError

    with pytest.raises(Exit, match="pass --yes"):
        dp.deploy_release(c, cfg, k, release(RELEASE, cfg), RELEASE, confirm=no_tty)
    asked: list[str] = []
    dp.deploy_release(
        c,
        cfg,
        k,
        release(RELEASE, cfg),
        RELEASE,
        confirm=lambda q: asked.append(q) or RELEASE,
        **no_wait(),
    )
    assert asked and RELEASE in asked[0]
    assert [cmd.split()[3] for cmd in commands(c) if cmd.startswith("kubectl")] == ["diff", "apply"]
    c2 = kubectl_context()
    dp.deploy_release(c2, cfg, k, release(RELEASE, cfg), RELEASE, yes=True, **no_wait())
    assert [cmd.split()[3] for cmd in commands(c2) if cmd.startswith("kubectl")] == [
        "diff",
        "apply",
    ]


def failing_pod(name: str) -> Any:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="api")]),
        status=k8s.V1PodStatus(
            phase="Running",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="api", ready=False, restart_count=4, image="i", image_id="x"
                )
            ],
        ),
    )


def test_rollout_that_never_finishes_exits_nonzero_with_events_and_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = load_config("stage", environ={})
    core = FakeCore()
    core.pods = [failing_pod("api-7d9c-abcde")]
    k = cluster(SHA_TAG, ready=0, core=core)
    with pytest.raises(Exit) as info:
        dp.deploy_release(
            kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, timeout=5, **no_wait()
        )
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "Back-off restarting failed container in api-7d9c-abcde" in out
    assert "Traceback: boom in api-7d9c-abcde" in out
    assert "0/1" in out
    assert ledger(k.core) == {}  # a failed deploy is not a release


def test_failed_migration_exits_nonzero_and_is_retried_next_time() -> None:
    cfg = load_config("stage", environ={})
    k = cluster(SHA_TAG, job="Failed")
    with pytest.raises(Exit, match="did not succeed"):
        dp.deploy_release(kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert k.batch.deleted == [job_name(SHA_TAG)]  # removed so apply re-creates it


def test_statefulset_rollout_waits_for_the_update_revision() -> None:
    sts = k8s.V1StatefulSet(
        metadata=k8s.V1ObjectMeta(name="postgres", generation=3),
        spec=k8s.V1StatefulSetSpec(
            replicas=1, selector=k8s.V1LabelSelector(), service_name="p", template={}
        ),
        status=k8s.V1StatefulSetStatus(
            observed_generation=3,
            replicas=1,
            ready_replicas=1,
            updated_replicas=1,
            current_revision="postgres-1",
            update_revision="postgres-2",
        ),
    )
    assert rollout_of("StatefulSet", sts).done is False
    sts.status.current_revision = "postgres-2"
    assert rollout_of("StatefulSet", sts).done is True


def test_local_env_is_not_a_deploy_target() -> None:
    with pytest.raises(Exit, match="stage, prod"):
        deploy_tasks.deploy(MockContext(), env="local", tag="x")


def test_missing_secrets_stop_the_deploy_before_kubectl() -> None:
    cfg, c = load_config("stage", environ={}), kubectl_context()
    k = cluster(SHA_TAG)
    del k.core.secrets[(STAGE_NS, names.FlowerSecret.NAME)]
    with pytest.raises(Exit, match=r"invoke secrets\.generate --env stage"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert commands(c) == []


def test_prod_reads_the_stage_record_from_the_stage_cluster() -> None:
    cfg = load_config("prod", environ={})
    stage = FakeCore()
    stage_ran(stage, RELEASE)
    c = kubectl_context()
    k = cluster(RELEASE)
    dp.deploy_release(
        c, cfg, k, release(RELEASE, cfg), RELEASE, yes=True, stage_core=stage, **no_wait()
    )
    assert [cmd.split()[3] for cmd in commands(c) if cmd.startswith("kubectl")] == ["diff", "apply"]
