"""deploy: namespace, prerequisites, prune, prod rules, migrate job, waits, fail-fast, pull secret.

kubectl is a MockContext (commands are recorded, nothing runs); the cluster API objects are
in-memory fakes that answer like a server (404, 403, 422, CRD discovery, 204 logs), and time
is a FakeClock that moves only when a wait sleeps. This checks command construction and
decisions, not a real rollout.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from invoke import Exit, MockContext
from kubernetes import client as k8s
from support.fake_kube import (
    TRAEFIK_SERVED,
    FakeBatch,
    FakeClock,
    FakeCore,
    FakeDiscovery,
    FakeStorage,
    new_pod_labels,
    old_pod_labels,
    pod,
)
from support.fake_release import (
    AUTH,
    LOCAL_ID,
    PROD_NS,
    RELEASE,
    SHA_TAG,
    STAGE_NS,
    Spy,
    cluster,
    commands,
    kubectl_context,
    no_wait,
    release,
    stage,
    stage_ran,
    verbs,
)

from desbordante_ops.cluster import deploy as dp
from desbordante_ops.cluster import kube, names, registry, rollout
from desbordante_ops.cluster.releases import ledger
from desbordante_ops.cluster.rollout import rollout_of
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import deploy as deploy_tasks

# --- diff, apply, prune, namespace ----------------------------------------------------------


def test_stage_deploy_diffs_before_apply_and_records_the_release() -> None:
    cfg, k, c = stage(), cluster(SHA_TAG), kubectl_context()
    assert dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait()) is True
    cmds = commands(c)
    assert verbs(c) == ["diff", "apply"]
    assert cmds[0].split(" -f ")[1].split()[0] == cmds[1].split(" -f ")[1].split()[0]
    assert "--kubeconfig" in cmds[0]
    record = ledger(k.core)[f"{STAGE_NS}.{SHA_TAG}"]
    assert record.image == f"{cfg.toolkit.IMAGE_NAME}:{SHA_TAG}" and record.image_id == LOCAL_ID


def test_diff_and_apply_prune_only_our_instance_and_the_kinds_we_own() -> None:
    cfg, c = stage(), kubectl_context()
    dp.deploy_release(c, cfg, cluster(SHA_TAG), release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    for command in commands(c):
        words = command.split()
        assert "--prune" in words and "--all" not in words
        assert words[words.index("-l") + 1] == f"app.kubernetes.io/instance={STAGE_NS}"
        allowed = {w.split("=", 1)[1] for w in words if w.startswith("--prune-allowlist=")}
        assert allowed == set(dp.PRUNE_ALLOWLIST)
        assert "core/v1/Namespace" not in allowed  # nothing cluster-scoped
        assert "core/v1/PersistentVolumeClaim" not in allowed  # data is never pruned
        assert "core/v1/Secret" not in allowed  # Secrets are created through the API


def test_applied_file_is_the_rendered_manifests_without_the_namespace() -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    spy = Spy(k)
    dp.deploy_release(spy, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert spy.applied == [d for d in release(SHA_TAG, cfg).docs if d["kind"] != "Namespace"]


def test_missing_namespace_is_created_through_the_api_before_kubectl() -> None:
    cfg, core = stage(), FakeCore()
    k = cluster(SHA_TAG, core=core)
    del core.namespaces[STAGE_NS]  # deleting a namespace deletes what is in it
    core.secrets = {key: s for key, s in core.secrets.items() if key[0] != STAGE_NS}
    rendered = release(SHA_TAG, cfg)
    rendered.docs[0]["metadata"]["labels"] = dict(names.NAMESPACE_LABELS)
    with pytest.raises(Exit, match="Secrets missing"):  # a new namespace has no Secrets yet
        dp.deploy_release(kubectl_context(), cfg, k, rendered, SHA_TAG, **no_wait())
    created = core.namespaces[STAGE_NS].metadata
    assert created.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert created.labels["app.kubernetes.io/managed-by"] == "desbordante-ops"


def test_existing_namespace_is_left_alone() -> None:
    cfg, core = stage(), FakeCore()
    core.may_create_namespaces = False  # a devops user: namespace-scoped rights only
    k = cluster(SHA_TAG, core=core)
    dp.deploy_release(kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert f"create_namespace {STAGE_NS}" not in core.calls


def test_a_user_who_may_not_read_namespaces_deploys_into_the_existing_one() -> None:
    cfg, core, c = stage(), FakeCore(), kubectl_context()
    core.may_read_namespaces = core.may_create_namespaces = False
    dp.deploy_release(c, cfg, cluster(SHA_TAG, core=core), release(SHA_TAG, cfg), SHA_TAG)
    assert verbs(c) == ["diff", "apply"]


def test_a_missing_namespace_a_user_may_not_create_is_one_clear_line() -> None:
    cfg, core, c = stage(), FakeCore(), kubectl_context()
    k = cluster(SHA_TAG, core=core)
    del core.namespaces[STAGE_NS]
    core.may_create_namespaces = False
    with pytest.raises(Exit, match=r"cluster admin to run `invoke secrets\.generate --env stage`"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert commands(c) == []


def test_second_deploy_of_same_release_changes_nothing() -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    dp.deploy_release(kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    c = kubectl_context(diff_exit=0)
    assert dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait()) is False
    assert verbs(c) == ["diff"]  # no apply


def test_kubectl_diff_error_stops_before_apply() -> None:
    cfg, c = stage(), kubectl_context(diff_exit=2)
    with pytest.raises(Exit, match="kubectl diff failed"):
        dp.deploy_release(c, cfg, cluster(SHA_TAG), release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert len(commands(c)) == 1


def test_kubectl_apply_error_is_one_line_and_nothing_is_waited_for() -> None:
    cfg, c, k = stage(), kubectl_context(apply_exit=1), cluster(SHA_TAG, ready=0)
    with pytest.raises(Exit, match=r"^kubectl apply failed \(exit 1\); see its output above\.$"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert ledger(k.core) == {}  # a failed deploy is not a release


# --- prod -----------------------------------------------------------------------------------


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
    assert commands(c) == []

    def no_tty(question: str) -> str:
        raise EOFError

    with pytest.raises(Exit, match="pass --yes"):
        dp.deploy_release(c, cfg, k, release(RELEASE, cfg), RELEASE, confirm=no_tty)
    asked: list[str] = []

    def typed_tag(question: str) -> str:
        asked.append(question)
        return RELEASE

    dp.deploy_release(c, cfg, k, release(RELEASE, cfg), RELEASE, confirm=typed_tag, **no_wait())
    assert asked and RELEASE in asked[0]
    assert verbs(c) == ["diff", "apply"]
    c2 = kubectl_context()
    dp.deploy_release(c2, cfg, k, release(RELEASE, cfg), RELEASE, yes=True, **no_wait())
    assert verbs(c2) == ["diff", "apply"]


def test_prod_reads_the_stage_record_from_the_stage_cluster() -> None:
    cfg = load_config("prod", environ={})
    stage_core = FakeCore()
    stage_ran(stage_core, RELEASE)
    k = cluster(RELEASE)
    dp.deploy_release(
        kubectl_context(),
        cfg,
        k,
        release(RELEASE, cfg),
        RELEASE,
        yes=True,
        stage_core=stage_core,
        **no_wait(),
    )
    assert ledger(k.core)[f"{PROD_NS}.{RELEASE}"].image_id == LOCAL_ID


# --- waits: timeout, progress, fail fast, diagnostics ----------------------------------------


# A blocker with a grace period ends the wait within it plus a poll or two.
GRACE = rollout.STUCK_GRACE_SECONDS + 2 * rollout.POLL_SECONDS


def stuck_pod(name: str, **state: Any) -> Any:
    """A pod of the newest ReplicaSet of the api Deployment."""
    return pod(name, new_pod_labels(names.API), **state)


def deploy_with_pods(
    pods: list[Any], timeout: float = 600, ready: int = 0, **kw: Any
) -> tuple[Exit, FakeClock, FakeCore]:
    cfg, core, clock = stage(), FakeCore(), FakeClock()
    core.pods = pods
    k = cluster(SHA_TAG, ready=ready, core=core, **kw)
    with pytest.raises(Exit) as info:
        dp.deploy_release(
            kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, timeout=timeout, clock=clock
        )
    return info.value, clock, core


def test_timeout_bounds_the_whole_wait() -> None:
    start = FakeClock().t
    error, clock, _ = deploy_with_pods([], timeout=30)
    assert error.code == 1
    assert "did not finish within 30 s" in str(error.message)
    assert 30 <= clock.t - start <= 30 + rollout.POLL_SECONDS


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_timeout_that_is_not_positive_is_refused(timeout: int) -> None:
    with pytest.raises(Exit, match="--timeout"):
        dp.deploy_release(
            kubectl_context(), stage(), cluster(SHA_TAG), release(SHA_TAG, stage()), SHA_TAG,
            timeout=timeout,
        )  # fmt: skip


def test_deploy_task_takes_a_timeout() -> None:
    assert "timeout" in {a.name for a in deploy_tasks.deploy.get_arguments()}
    assert "timeout" in {a.name for a in deploy_tasks.rollback.get_arguments()}


@pytest.mark.parametrize(
    ("state", "reason", "hint", "max_seconds"),
    [
        (
            {"waiting": "ImagePullBackOff", "message": 'pull "img:1": not found'},
            "ImagePullBackOff",
            "invoke images.load",
            GRACE,
        ),
        (
            {"waiting": "ErrImagePull", "message": "manifest unknown"},
            "ErrImagePull",
            "REGISTRY_USERNAME",
            GRACE,
        ),
        (
            {"unschedulable": "0/1 nodes are available: 1 Insufficient memory."},
            "Unschedulable",
            "lower the requests",
            GRACE,
        ),
        (
            {"waiting": "CreateContainerConfigError", "message": 'secret "x" not found'},
            "CreateContainerConfigError",
            "invoke secrets.generate",
            GRACE,
        ),
        ({"waiting": "InvalidImageName"}, "InvalidImageName", "IMAGE_NAME", 0),
        (
            {"waiting": "CrashLoopBackOff", "restarts": rollout.CRASH_RESTARTS, "phase": "Running"},
            "CrashLoopBackOff",
            "keeps crashing",
            0,
        ),
    ],
)
def test_a_pod_that_cannot_start_ends_the_wait_early_with_one_clear_line(
    state: dict[str, Any], reason: str, hint: str, max_seconds: float
) -> None:
    start = FakeClock().t
    error, clock, _ = deploy_with_pods([stuck_pod("api-new5f7d-x1", **state)])
    message = str(error.message)
    assert error.code == 1
    assert message.startswith(f"Pod api-new5f7d-x1 cannot start: {reason}")
    assert hint in message and "\n" not in message
    assert clock.t - start <= max_seconds  # not the 600 s timeout


def test_a_crash_loop_below_the_restart_threshold_is_still_waited_for() -> None:
    state = {"waiting": "CrashLoopBackOff", "restarts": 1, "phase": "Running"}
    error, _, _ = deploy_with_pods([stuck_pod("api-new5f7d-x1", **state)], timeout=20)
    assert "did not finish within 20 s" in str(error.message)


def test_old_pods_crash_looping_while_a_fix_rolls_out_are_not_judged() -> None:
    old = pod(
        "api-old9c3b-a",
        old_pod_labels(names.API),
        waiting="CrashLoopBackOff",
        restarts=9,
        phase="Running",
    )
    error, _, _ = deploy_with_pods([old], timeout=20)
    assert "did not finish within 20 s" in str(error.message)  # waited; not "cannot start"


def test_without_rights_on_replica_sets_deployment_pods_are_not_judged() -> None:
    """A Role without `replicasets` cannot tell a Deployment's new pods from old ones."""
    cfg, core, clock = stage(), FakeCore(), FakeClock()
    core.pods = [stuck_pod("api-new5f7d-x1", waiting="InvalidImageName")]
    k = cluster(SHA_TAG, ready=0, core=core)
    k.apps.may_list_replica_sets = False
    with pytest.raises(Exit, match="did not finish within 10 s"):
        dp.deploy_release(
            kubectl_context(), cfg, k, release(SHA_TAG, cfg), SHA_TAG, timeout=10, clock=clock
        )


def test_a_pull_error_that_clears_within_the_grace_period_does_not_fail() -> None:
    tracker = rollout.Stuck(FakeClock())
    blocker = rollout.Blocker("p", "ErrImagePull", "", "ImagePull", 30.0)
    assert tracker.confirmed([blocker]) is None
    tracker.clock.sleep(20)
    assert tracker.confirmed([]) is None  # the retry pulled it
    tracker.clock.sleep(20)
    assert tracker.confirmed([blocker]) is None  # a new failure starts a new grace period
    tracker.clock.sleep(30)
    assert tracker.confirmed([blocker]) is blocker


def test_a_migrate_pod_that_cannot_pull_its_image_fails_fast() -> None:
    cfg, core, clock = stage(), FakeCore(), FakeClock()
    rendered = release(SHA_TAG, cfg)
    core.pods = [
        pod(
            "migrate-x",
            {"job-name": rendered.migrate_job},
            waiting="ImagePullBackOff",
            container="migrate",
        )
    ]
    k = cluster(SHA_TAG, job=None, core=core)
    start = clock.t
    with pytest.raises(Exit) as info:
        dp.deploy_release(kubectl_context(), cfg, k, rendered, SHA_TAG, clock=clock)
    assert re.match(
        r"Pod migrate-x cannot start: ImagePullBackOff .*images\.load", str(info.value.message)
    )
    assert clock.t - start <= GRACE


def test_progress_lines_are_printed_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    deploy_with_pods([], timeout=10)
    out = capsys.readouterr().out
    for name in names.DEPLOYMENTS:
        assert f"  … deployment/{name} 0/1" in out
    for name in names.STATEFULSETS:
        assert f"  … statefulset/{name} 0/1" in out
    assert re.search(r"  … job/migrate-3f2a9c1-[0-9a-f]{8} 1/1", out)


def test_rollout_that_never_finishes_exits_nonzero_with_events_and_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    not_ready = stuck_pod("api-7d9c-abcde", phase="Running", restarts=1)
    error, _, _ = deploy_with_pods([not_ready], timeout=5)
    assert error.code == 1
    out = capsys.readouterr().out
    assert "Back-off restarting failed container in api-7d9c-abcde" in out
    assert "Traceback: boom in api-7d9c-abcde" in out
    assert "0/1" in out


def test_a_204_log_answer_says_no_log_lines_instead_of_an_empty_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = FakeCore()
    core.logs[("api-7d9c-abcde", "api")] = None  # what the client returns for 204 No Content
    core.pods = [stuck_pod("api-7d9c-abcde", phase="Running")]
    k = cluster(SHA_TAG, ready=0, core=core)
    with pytest.raises(Exit):
        dp.deploy_release(
            kubectl_context(), stage(), k, release(SHA_TAG, stage()), SHA_TAG, timeout=4,
            **no_wait(),
        )  # fmt: skip
    out = capsys.readouterr().out
    assert "last log lines of api: (no log lines)" in out
    assert "last log lines of api:\n" not in out


def test_failed_deploy_is_not_recorded_as_a_release() -> None:
    _, _, core = deploy_with_pods([], timeout=5)
    assert ledger(core) == {}


def test_failed_migration_exits_nonzero_and_is_retried_next_time() -> None:
    cfg = stage()
    k = cluster(SHA_TAG, job="Failed")
    spy = Spy(k, job="Failed")
    with pytest.raises(Exit, match="did not succeed"):
        dp.deploy_release(spy, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert k.batch.deleted == [release(SHA_TAG, cfg).migrate_job]
    assert k.batch.created[-1] == release(SHA_TAG, cfg).migrate_job  # apply re-created it


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


# --- prerequisites: Traefik CRDs, default StorageClass ---------------------------------------


def test_first_deploy_waits_for_the_traefik_crds_with_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, c = stage(), kubectl_context()
    discovery = FakeDiscovery(TRAEFIK_SERVED, served_from=4)
    k = cluster(SHA_TAG, discovery=discovery)
    dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert discovery.calls >= 4
    assert verbs(c) == ["diff", "apply"]
    out = capsys.readouterr().out
    assert "crd/Middleware (traefik.io/v1alpha1) 0/1 (not served yet)" in out
    assert "crd/Middleware (traefik.io/v1alpha1) 1/1" in out


def test_crds_that_never_appear_end_in_a_clear_exit_before_kubectl() -> None:
    cfg, c, clock = stage(), kubectl_context(), FakeClock()
    k = cluster(SHA_TAG, discovery=FakeDiscovery(TRAEFIK_SERVED, served_from=None))
    with pytest.raises(Exit, match=r"Middleware \(traefik\.io/v1alpha1\) is not served .* 60 s"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, timeout=60, clock=clock)
    assert commands(c) == []


def test_a_crd_group_without_our_kind_is_not_enough() -> None:
    cfg, c = stage(), kubectl_context()
    discovery = FakeDiscovery({("traefik.io", "v1alpha1"): ["IngressRoute"]})
    with pytest.raises(Exit, match="not served"):
        dp.deploy_release(
            c, cfg, cluster(SHA_TAG, discovery=discovery), release(SHA_TAG, cfg), SHA_TAG,
            timeout=10, **no_wait(),
        )  # fmt: skip


def test_first_deploy_waits_for_a_default_storage_class() -> None:
    cfg, c, storage = stage(), kubectl_context(), FakeStorage(default_from=3)
    dp.deploy_release(
        c, cfg, cluster(SHA_TAG, storage=storage), release(SHA_TAG, cfg), SHA_TAG, **no_wait()
    )
    assert storage.calls >= 3 and verbs(c) == ["diff", "apply"]


def test_no_default_storage_class_ends_in_a_clear_exit() -> None:
    cfg, c = stage(), kubectl_context()
    k = cluster(SHA_TAG, storage=FakeStorage(default_from=None))
    with pytest.raises(Exit, match=r"No default StorageClass after 20 s.*local-path"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, timeout=20, **no_wait())
    assert commands(c) == []


def test_a_user_who_may_not_list_storage_classes_is_not_blocked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, c = stage(), kubectl_context()
    k = cluster(SHA_TAG, storage=FakeStorage(allowed=False))
    dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert "may not list StorageClasses" in capsys.readouterr().out
    assert verbs(c) == ["diff", "apply"]


# --- image pull Secret -----------------------------------------------------------------------


def pull_secrets(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"].get(
            "imagePullSecrets"
        )
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_registry_credentials_create_the_pull_secret_and_pods_reference_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    spy, rendered = Spy(k), release(SHA_TAG, cfg)
    dp.deploy_release(spy, cfg, k, rendered, SHA_TAG, registry_auth=AUTH, **no_wait())
    secret = k.core.secrets[(STAGE_NS, registry.PULL_SECRET)]
    assert secret.type == "kubernetes.io/dockerconfigjson"
    config = json.loads(k.core.value(STAGE_NS, registry.PULL_SECRET, ".dockerconfigjson"))
    entry = config["auths"]["ghcr.io"]
    assert entry["username"] == "robot" and entry["password"] == AUTH["password"]
    assert base64.b64decode(entry["auth"]).decode() == f"robot:{AUTH['password']}"
    found = pull_secrets(spy.applied)
    backend = ["Deployment/api", next(n for n in found if n.startswith("Job/"))]
    assert all(found[n] == [{"name": registry.PULL_SECRET}] for n in backend)
    assert found["StatefulSet/postgres"] is None  # a public image needs none
    assert next(n for n in found if n.startswith("Job/")) != f"Job/{rendered.migrate_job}"
    output = capsys.readouterr().out + " ".join(spy.lines)
    assert AUTH["password"] not in output


def test_an_existing_pull_secret_stays_referenced_without_credentials() -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    registry.ensure_pull_secret(k.core, STAGE_NS, "ghcr.io/x/y:1", AUTH)
    spy = Spy(k)
    dp.deploy_release(spy, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert pull_secrets(spy.applied)["Deployment/api"] == [{"name": registry.PULL_SECRET}]


def test_no_credentials_and_no_secret_means_no_pull_secret() -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    spy = Spy(k)
    dp.deploy_release(spy, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert (STAGE_NS, registry.PULL_SECRET) not in k.core.secrets
    assert pull_secrets(spy.applied)["Deployment/api"] is None


def test_changed_credentials_update_the_pull_secret() -> None:
    core = FakeCore()
    registry.ensure_pull_secret(core, STAGE_NS, "ghcr.io/x/y:1", AUTH)
    registry.ensure_pull_secret(core, STAGE_NS, "ghcr.io/x/y:1", {**AUTH, "password": "new"})
    config = json.loads(core.value(STAGE_NS, registry.PULL_SECRET, ".dockerconfigjson"))
    assert config["auths"]["ghcr.io"]["password"] == "new"
    assert core.calls.count(f"patch_secret {registry.PULL_SECRET}") == 1
    registry.ensure_pull_secret(core, STAGE_NS, "ghcr.io/x/y:1", {**AUTH, "password": "new"})
    assert core.calls.count(f"patch_secret {registry.PULL_SECRET}") == 1  # unchanged: kept


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("ghcr.io/desbordante/desbordante-backend", "ghcr.io"),
        ("127.0.0.1:5000/desbordante-backend", "127.0.0.1:5000"),
        ("desbordante/desbordante-backend", registry.DOCKER_HUB),
    ],
)
def test_the_credential_is_for_the_registry_of_the_image(image: str, host: str) -> None:
    assert registry.registry_of(f"{image}:1.0") == host


def test_a_job_template_change_under_the_same_name_is_refused_like_the_api_does() -> None:
    batch = FakeBatch()
    body = {"metadata": {"name": "migrate-x"}, "spec": {"template": {"spec": {"a": 1}}}}
    batch.create_namespaced_job(STAGE_NS, body)
    batch.patch_namespaced_job("migrate-x", STAGE_NS, body)  # same template: fine
    with pytest.raises(kube.ApiException) as info:
        batch.patch_namespaced_job(
            "migrate-x", STAGE_NS, {"spec": {"template": {"spec": {"a": 2}}}}
        )
    assert info.value.status == 422


# --- tasks -------------------------------------------------------------------------------------


def test_local_env_is_not_a_deploy_target() -> None:
    with pytest.raises(Exit, match="stage, prod"):
        deploy_tasks.deploy(MockContext(), env="local", tag="x")
    with pytest.raises(Exit, match="stage, prod"):
        deploy_tasks.rollback(MockContext(), env="local")


def test_missing_secrets_stop_the_deploy_before_kubectl() -> None:
    cfg, c = stage(), kubectl_context()
    k = cluster(SHA_TAG)
    del k.core.secrets[(STAGE_NS, names.FlowerSecret.NAME)]
    with pytest.raises(Exit, match=r"invoke secrets\.generate --env stage"):
        dp.deploy_release(c, cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    assert commands(c) == []


def test_redeploying_a_tag_with_a_pull_secret_added_is_a_new_job_not_a_422() -> None:
    cfg, k = stage(), cluster(SHA_TAG)
    dp.deploy_release(Spy(k), cfg, k, release(SHA_TAG, cfg), SHA_TAG, **no_wait())
    spy = Spy(k)
    dp.deploy_release(spy, cfg, k, release(SHA_TAG, cfg), SHA_TAG, registry_auth=AUTH, **no_wait())
    assert len(k.batch.created) == 2  # the seeded Job, then the new spec's Job


def test_the_fake_apply_does_refuse_a_changed_template_under_the_same_name() -> None:
    """Negative control for the test above: same Job name, other template -> 422 -> Exit."""
    cfg, k = stage(), cluster(SHA_TAG)
    rendered = release(SHA_TAG, cfg)
    rendered.find("Job", rendered.migrate_job)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] = ["migrate", "--other"]
    with pytest.raises(Exit, match="kubectl apply failed"):
        dp.deploy_release(Spy(k), cfg, k, rendered, SHA_TAG, **no_wait())
