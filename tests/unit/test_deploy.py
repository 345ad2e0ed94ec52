"""deploy on the fake API server: plan = run, server-side apply, prune, diff, take-over from
client-side apply, namespace, Secrets, pull Secret, prerequisites, migrate Job, waits and
fail-fast, verify, record, RBAC (devops and viewer).

The manifests are the real ones (`kubectl kustomize`); the API server is tests/support/fakeapi
with its simulated controllers (pods start as the Kubelet is told); time is a FakeClock that
moves only when a wait sleeps. Nothing here runs Kubernetes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from invoke import Context, Exit
from support.clock import FakeClock
from support.fakeapi.connect import kube_for
from support.fakeapi.k3s import Cluster, config, prepare, rendered
from support.fakeapi.server import FakeApiServer
from support.plans import plan_lines

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release import apply
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release, manifests_text
from desbordante_ops.cluster.release.ledger import LEDGER, SYSTEM_NAMESPACE, ledger
from desbordante_ops.cluster.secrets.pull import PULL_SECRET
from desbordante_ops.core import plan
from desbordante_ops.tasks import deploy as deploy_tasks

TAG = "v1.4.0"
STAGE = "desbordante-stage"
AUTH = {"username": "robot", "password": "s3cret-registry-token"}


def release(
    k: Kube,
    env: str = "stage",
    tag: str = TAG,
    *,
    auth: dict[str, str] | None = None,
    **settings: str,
) -> Release:
    """TAG's real manifests for ENV on K, waits on a clock that moves only when they sleep."""
    return released(k, env, tag, auth, settings)


def released(
    k: Kube, env: str, tag: str, auth: dict[str, str] | None, settings: dict[str, str]
) -> Release:
    options = Options(yes=True, timeout=120, registry_auth=auth, clock=FakeClock())
    x = config(env, **settings)
    return Release(Context(), x, k, tag, rendered(env, tag, **settings), options)


def deployed(k3s: Cluster, tag: str = TAG, **settings: str) -> Release:
    """Stage prepared (namespace, Secrets) and TAG deployed to it."""
    prepare(k3s.admin, "stage")
    x = released(k3s.admin, "stage", tag, None, settings)
    deploy_release(x)
    return x


def twice(x: Release) -> tuple[plan.Seen, plan.Seen]:
    """The dry run and then the real run of deploying X: what each printed and ran."""
    with plan.watching() as seen:
        deploy_release(x, dry_run=True)
        deploy_release(x)
    return seen[0], seen[1]


def rows_of(seen: plan.Seen, action: str) -> list[str]:
    return [target for act, target in seen.rows if act == action]


# --- the plan is the run -----------------------------------------------------------------------


def test_stage_dry_run_prints_the_steps_the_real_deploy_then_runs(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    dry, real = twice(release(k3s.admin))
    assert dry.dry_run and not real.dry_run
    assert dry.rows == real.rows
    assert dry.ran == [] and real.ran == real.runnable == dry.runnable
    actions = [action for action, _ in real.ran]
    assert actions == ["take", "check", "apply", "wait", "wait", "run", "record", "configure"]


def test_a_dry_run_writes_nothing(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    before = {key: json.dumps(obj, sort_keys=True) for key, obj in k3s.server.objects.items()}
    asked = len(k3s.server.requests)
    deploy_release(release(k3s.admin), dry_run=True)
    after = {key: json.dumps(obj, sort_keys=True) for key, obj in k3s.server.objects.items()}
    assert after == before
    writes = [r for r in k3s.server.writes() if r in k3s.server.requests[asked:]]
    kept = [
        r for r in writes if "dryRun=All" not in r.path and "selfsubjectaccessreviews" not in r.path
    ]
    assert writes and kept == []  # every write of the dry run asked the server not to keep it


def test_stage_deploy_applies_server_side_and_records_the_verified_release(k3s: Cluster) -> None:
    x = deployed(k3s)
    api = k3s.server.get("Deployment", names.API, STAGE)
    assert api is not None
    managers = {(e["manager"], e["operation"]) for e in api["metadata"]["managedFields"]}
    assert ("desbordante-ops", "Apply") in managers
    assert "kubectl.kubernetes.io/last-applied-configuration" not in (
        api["metadata"].get("annotations") or {}
    )
    record = ledger(k3s.admin.core)[f"{STAGE}.{TAG}"]
    assert record.image == x.image and record.image_id.startswith(x.rendered.image.split(":")[0])
    assert record.verified_by == x.rendered.verify_job and record.verified


def test_the_namespace_and_verify_job_are_not_applied_with_the_rest(k3s: Cluster) -> None:
    x = deployed(k3s)
    namespace = k3s.server.get("Namespace", STAGE)
    assert namespace is not None
    assert all(e["manager"] != "desbordante-ops" or e["operation"] != "Apply"
               for e in namespace["metadata"].get("managedFields") or [])  # fmt: skip
    kinds = {doc["kind"] for doc in x.rendered.applied_docs}
    assert "Namespace" not in kinds
    assert x.rendered.verify_job not in {d["metadata"]["name"] for d in x.rendered.applied_docs}


def test_a_second_deploy_of_the_same_release_changes_nothing(k3s: Cluster) -> None:
    x = deployed(k3s)
    dry, real = twice(release(k3s.admin))
    assert ("keep", "the cluster already matches the manifests") in real.rows
    assert not rows_of(real, "apply") and not rows_of(real, "delete")
    assert dry.rows == real.rows
    assert deploy_release(x) is False


def test_one_changed_setting_diffs_only_that_change(
    k3s: Cluster, wide_console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed(k3s)
    capsys.readouterr()
    deploy_release(release(k3s.admin, LOG_LEVEL="DEBUG"), dry_run=True)
    out = capsys.readouterr().out
    changed = [
        line for line in out.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]  # fmt: skip
    assert "-  LOG_LEVEL: INFO" in changed and "+  LOG_LEVEL: DEBUG" in changed
    assert "last-applied-configuration" not in out
    others = [line for line in changed if "LOG_LEVEL" not in line]
    # Only the generated ConfigMap's name moves, where it is referenced (and the migrate Job,
    # whose name is the hash of its spec, is a new Job).
    assert others and all(names.CONFIG_MAP in line or "name: migrate-" in line for line in others)
    # The database and the broker read their own ConfigMaps: not rolled by an app setting.
    assert "StatefulSet" not in out.split("(dry run")[0]


def test_a_config_change_rolls_the_app_but_not_postgres_or_rabbitmq(k3s: Cluster) -> None:
    deployed(k3s)
    pods = {p["metadata"]["name"] for p in k3s.server.all("Pod", STAGE)}
    deploy_release(release(k3s.admin, LOG_LEVEL="DEBUG"))
    after = {p["metadata"]["name"] for p in k3s.server.all("Pod", STAGE)}
    assert {"postgres-0", "rabbitmq-0"} <= pods & after  # the same pods, not recreated
    api_before = {p for p in pods if p.startswith("api-")}
    assert api_before and not api_before & after  # the api rolled


# --- prune --------------------------------------------------------------------------------------


def test_prune_deletes_what_the_release_no_longer_renders_and_only_that(k3s: Cluster) -> None:
    deployed(k3s)
    old_config = [c for c in k3s.server.all("ConfigMap", STAGE)
                  if c["metadata"]["name"].startswith(names.CONFIG_MAP + "-")]  # fmt: skip
    # Something of ours applied by somebody else (no Apply of ours): never pruned.
    k3s.admin.core.create_namespaced_config_map(STAGE, {
        "metadata": {"name": "hand-made", "labels": {names.INSTANCE_LABEL: STAGE}}})  # fmt: skip
    _, real = twice(release(k3s.admin, LOG_LEVEL="DEBUG"))
    pruned = rows_of(real, "delete")
    assert (
        f"ConfigMap {STAGE}/{old_config[0]['metadata']['name']} (no longer rendered: prune)"
        in pruned
    )
    assert all("PersistentVolumeClaim" not in row and "Secret" not in row for row in pruned)
    assert k3s.server.get("ConfigMap", "hand-made", STAGE) is not None
    assert k3s.server.get("ConfigMap", old_config[0]["metadata"]["name"], STAGE) is None
    assert k3s.server.get("PersistentVolumeClaim", names.UPLOADS_PVC, STAGE) is not None


def test_every_rendered_kind_is_pruned_or_kept_on_purpose() -> None:
    for env in ("stage", "prod"):
        kinds = {doc["kind"] for doc in rendered(env, TAG).docs}
        allowed = {kind.kind for kind in apply.PRUNE_KINDS}
        assert kinds <= allowed | set(apply.NOT_PRUNED), kinds - allowed
        assert not allowed & {"Secret", "PersistentVolumeClaim", "Namespace"}


# --- from client-side apply (kubectl apply) to server-side apply --------------------------------


OLD_ANNOTATION = "desbordante.io/only-in-the-old-release"


def client_side_applied(k3s: Cluster, x: Release) -> None:
    """Deploy X the way the toolkit did before: every object created by `kubectl apply`
    (client-side: the last-applied annotation, manager kubectl-client-side-apply). The api
    Deployment carries an annotation the newer release no longer renders."""
    prepare(k3s.admin, "stage")
    for doc in x.rendered.applied_docs:
        body = json.loads(json.dumps(doc))
        if (doc["kind"], doc["metadata"]["name"]) == ("Deployment", names.API):
            body["metadata"].setdefault("annotations", {})[OLD_ANNOTATION] = "yes"
        last = json.dumps(body, sort_keys=True)
        body["metadata"].setdefault("annotations", {})[apply.LAST_APPLIED] = last
        k3s.server.create_as(body, "kubectl-client-side-apply")


def test_objects_from_client_side_apply_are_taken_over_and_keep_working(k3s: Cluster) -> None:
    client_side_applied(k3s, release(k3s.admin))
    new = release(k3s.admin, LOG_LEVEL="DEBUG")
    dry, real = twice(new)
    assert dry.rows == real.rows
    takeovers = rows_of(real, "take over")
    assert takeovers and "client-side apply" in takeovers[0]
    api = k3s.server.get("Deployment", names.API, STAGE)
    assert api is not None
    annotations = api["metadata"].get("annotations") or {}
    assert apply.LAST_APPLIED not in annotations
    assert OLD_ANNOTATION not in annotations  # no longer rendered: removed, as ours now
    managers = [e["manager"] for e in api["metadata"]["managedFields"]]
    assert "kubectl-client-side-apply" not in managers and "desbordante-ops" in managers
    # The old generated ConfigMap (client-side applied) is pruned like any other of ours.
    configs = {c["metadata"]["name"] for c in k3s.server.all("ConfigMap", STAGE)}
    wanted = {d["metadata"]["name"] for d in new.rendered.of_kind("ConfigMap")}
    assert {c for c in configs if c.startswith(names.CONFIG_MAP + "-")} <= wanted


def test_a_hand_edit_is_reported_as_a_conflict_and_taken_over(
    k3s: Cluster, wide_console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed(k3s)
    k3s.admin.apps.patch_namespaced_deployment(
        names.WORKER, STAGE, {"spec": {"replicas": 3}}, field_manager="kubectl-edit"
    )
    _, real = twice(release(k3s.admin))
    conflicts = rows_of(real, "take over")
    assert any("kubectl-edit" in row and "spec.replicas" in row for row in conflicts)
    worker = k3s.server.get("Deployment", names.WORKER, STAGE)
    assert worker is not None and worker["spec"]["replicas"] == 1


# --- what must be there before anything is written -------------------------------------------


def test_missing_secrets_stop_the_deploy_before_anything_is_written(k3s: Cluster) -> None:
    x = release(k3s.admin)
    k3s.admin.core.create_namespace({"metadata": {"name": STAGE}})
    with plan.watching() as seen, pytest.raises(Exit, match=r"secrets\.generate --env stage"):
        deploy_release(x)
    assert seen[0].ran == []
    assert k3s.server.all("Deployment", STAGE) == []
    deploy_release(x, dry_run=True)  # the dry run shows the stop and exits 0


def test_a_missing_namespace_is_created_through_the_api_by_an_admin(k3s: Cluster) -> None:
    x = release(k3s.admin)
    with plan.watching() as seen, pytest.raises(Exit, match="Secrets missing"):
        deploy_release(x)
    assert ("create", f"namespace {STAGE} (Pod Security: restricted)") in seen[0].rows
    assert seen[0].ran == []  # the Secrets are missing too: nothing ran, nothing half-made
    assert k3s.server.get("Namespace", STAGE) is None


def test_devops_deploys_but_may_not_write_the_ledger_or_traefik(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    devops = k3s.grant("devops")
    dry, real = twice(release(devops))
    assert dry.rows == real.rows
    skipped = rows_of(real, "skip")
    assert any("may not write the release ledger" in row and "releases.record" in row
               for row in skipped)  # fmt: skip
    assert any("Traefik" in row and "may not change" in row for row in skipped)
    assert ledger(k3s.admin.core) == {}
    assert k3s.server.get("Deployment", names.API, STAGE) is not None


def test_a_missing_namespace_that_this_user_may_not_create_is_one_clear_line(
    k3s: Cluster,
) -> None:
    k3s.server.add_token("t0ken", "ops")
    k3s.server.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": "ops-admin"},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                 "name": "admin"},
                     "subjects": [{"kind": "User", "name": "ops"}]})  # fmt: skip
    with plan.watching() as seen, pytest.raises(Exit, match="may not create it; ask a cluster"):
        deploy_release(release(kube_for(k3s.server, token="t0ken")))
    assert seen[0].ran == []


def test_a_viewer_is_told_viewers_cannot_deploy(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    viewer = k3s.grant("viewer", user="vic")
    with pytest.raises(Exit) as refused:
        deploy_release(release(viewer))
    message = str(refused.value.message)
    assert "viewers cannot deploy" in message and "--role devops" in message
    assert "updates the Role" not in message
    assert k3s.server.all("Deployment", STAGE) == []


def test_the_pull_secret_is_created_and_referenced_by_every_backend_pod(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    dry, real = twice(release(k3s.admin, auth=AUTH))
    assert dry.rows == real.rows
    assert any(PULL_SECRET in target for _, target in real.ran)
    secret = k3s.server.get("Secret", PULL_SECRET, STAGE)
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    api = k3s.server.get("Deployment", names.API, STAGE)
    assert api is not None
    assert api["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": PULL_SECRET}]
    # Without credentials the existing Secret is kept and still referenced.
    _, again = twice(release(k3s.admin))
    assert ("keep", f"Secret {STAGE}/{PULL_SECRET} (pull credential for ghcr.io)") in again.rows


def test_without_traefiks_crds_the_deploy_waits_then_says_what_is_missing(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    k3s.server.crds.clear()
    with plan.watching() as seen, pytest.raises(Exit, match="Traefik's CRDs"):
        deploy_release(release(k3s.admin))
    assert any(a == "wait" and "(not yet)" in t for a, t in seen[0].rows)
    assert k3s.server.all("Deployment", STAGE) == []


# --- waits and fail-fast -------------------------------------------------------------------------


def test_a_crash_looping_release_fails_fast_with_its_events(
    k3s: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(k3s.admin, "stage")
    k3s.kubelet.behave(names.WORKER, ready=False, waiting="CrashLoopBackOff", restarts=3,
                       logs="Traceback: ImportError\n")  # fmt: skip
    x = release(k3s.admin)
    with pytest.raises(Exit, match="cannot start: CrashLoopBackOff"):
        deploy_release(x)
    out = capsys.readouterr().out
    assert "ImportError" in out and "BackOff" in out
    assert ledger(k3s.admin.core) == {}


def test_a_failed_migration_fails_the_deploy_and_is_run_again_next_time(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    k3s.kubelet.behave("migrate-", job="fail", logs="alembic: database unreachable\n")
    with pytest.raises(Exit, match="did not succeed"):
        deploy_release(release(k3s.admin))
    k3s.kubelet.behaviours.clear()
    _, real = twice(release(k3s.admin))
    job = release(k3s.admin).rendered.migrate_job
    assert ("delete", f"Job {STAGE}/{job} (failed before; the apply runs it again)") in real.ran
    assert ledger(k3s.admin.core)


# --- verify -----------------------------------------------------------------------------------


def test_a_failed_verify_fails_the_deploy_records_nothing_and_names_rollback(
    k3s: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(k3s.admin, "stage")
    k3s.kubelet.behave("verify-", job="fail", logs="verify: ready ok\nverify: task FAILED: "
                       "the worker never picked it up\n")  # fmt: skip
    with pytest.raises(Exit) as failed:
        deploy_release(release(k3s.admin))
    message = str(failed.value.message)
    assert "worker never picked it up" in message and "deploy.rollback --env stage" in message
    assert "verify: ready ok" in capsys.readouterr().out
    assert ledger(k3s.admin.core) == {}
    assert k3s.server.get("Deployment", names.API, STAGE) is not None  # pods stay as they are


def test_the_ledger_lives_where_only_an_admin_writes(k3s: Cluster) -> None:
    deployed(k3s)
    cm = k3s.server.get("ConfigMap", LEDGER, SYSTEM_NAMESPACE)
    assert cm is not None and f"{STAGE}.{TAG}" in cm["data"]
    assert k3s.server.get("ConfigMap", LEDGER, STAGE) is None


def test_the_printed_plan_has_one_row_per_step(
    k3s: Cluster, wide_console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(k3s.admin, "stage")
    with plan.watching() as seen:
        deploy_release(release(k3s.admin), dry_run=True)
    lines = plan_lines(capsys.readouterr().out)
    assert len(lines) == len(seen[0].rows)
    assert lines[0].startswith("│ 1 │ take │ the deploy lock")


def test_deploy_render_prints_exactly_what_deploy_applies_so_devops_can_apply_it(
    k3s: Cluster,
) -> None:
    """`invoke deploy.render --env stage | kubectl apply -f -` as devops failed on the
    Namespace (`cannot patch resource "namespaces"`): render leaves out what deploy does not
    apply, and each object it prints is one the devops Role may apply."""
    text = manifests_text(Context(), config("stage"), TAG, everything=False)
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert {doc["kind"] for doc in docs}.isdisjoint({"Namespace"})
    verify = rendered("stage", TAG).verify_job
    assert verify not in {doc["metadata"]["name"] for doc in docs}
    prepare(k3s.admin, "stage")
    devops = k3s.grant("devops")
    for doc in docs:
        devops.objects.apply(doc, dry_run=True)  # no 403 for any of them
    everything = manifests_text(Context(), config("stage"), TAG, everything=True)
    assert "kind: Namespace" in everything and verify in everything


# --- the tasks -------------------------------------------------------------------------------


def test_without_a_cluster_the_dry_runs_print_their_plan_and_the_real_runs_refuse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG_PATH", str(tmp_path / "no.kubeconfig"))
    with plan.watching() as seen:
        deploy_tasks.deploy(Context(), env="stage", tag=TAG, dry_run=True)
        deploy_tasks.rollback(Context(), env="stage", to="v1.3.0", dry_run=True)
        deploy_tasks.teardown(Context(), env="stage", dry_run=True)
    for each in seen:
        assert each.rows[0][0] == "unknown" and "No kubeconfig at" in each.rows[0][1]
    assert "dry run: nothing is changed" in capsys.readouterr().out
    with pytest.raises(Exit, match="Cannot go on: the cluster of stage: No kubeconfig at"):
        deploy_tasks.deploy(Context(), env="stage", tag=TAG)


def test_the_deploy_task_over_https_is_the_plan_its_dry_run_printed(
    fake_api: FakeApiServer,
    admin: Kube,
    admin_kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`invoke deploy --env stage`, for real through the kubeconfig (the toolkit's connect)."""
    prepare(admin, "stage")
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    with plan.watching() as seen:
        deploy_tasks.deploy(Context(), env="stage", tag=TAG, timeout=120, dry_run=True)
        deploy_tasks.deploy(Context(), env="stage", tag=TAG, timeout=120)
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    assert ledger(admin.core)[f"{STAGE}.{TAG}"].verified
