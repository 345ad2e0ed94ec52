"""`invoke status --env stage|prod` on the fake API server: a release deployed with the real
manifests (`deploy_release`), read back as rows; the claims' usage comes from `kubectl exec`
through the Invoke context (the fake models no pod exec), answered by a MockContext.

What the fake's controllers do not write (a volume bound by local-path, the StatefulSet
controller's claims of its volumeClaimTemplates) `provision` writes, as those controllers would.
"""

from __future__ import annotations

import re
from contextlib import ExitStack

import pytest
from invoke import Context, Exit, MockContext, Result
from support.clock import FakeClock
from support.fakeapi.k3s import Cluster, config, prepare, rendered
from support.fakeapi.server import FakeApiServer
from support.mockrun import commands

from desbordante_ops.cluster import status as cluster_status
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import restart_workloads
from desbordante_ops.cluster.release import verify
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.ledger import LEDGER, SYSTEM_NAMESPACE, Record
from desbordante_ops.core.plan import execute
from desbordante_ops.core.settings import EnvConfig

TAG = "v1.4.0"
STAGE = "desbordante-stage"
DISK = "/dev/sda1 41152736 10000000 30000000 25% /\n"  # df -Pk: 30000000 KiB available


def usage() -> dict[re.Pattern[str], Result]:
    """`du -sk` then `df -Pk` of each claim, by the container that mounts it (a new dict for
    each MockContext: it keeps its iterators in the dict it is given)."""
    return {
        re.compile(r".* -c (api|worker) -- sh -c .*"): Result(f"12345\n{DISK}"),
        re.compile(r".* -c postgres -- sh -c .*"): Result(f"48000\n{DISK}"),
        re.compile(r".* -c rabbitmq -- sh -c .*"): Result(f"900\n{DISK}"),
    }


# What kubectl printed when the API server could not reach the node's kubelet (seen on a real
# server): the kubelet URL with its query string, then the dial error.
KUBELET_UNREACHABLE = (
    'Error from server: error dialing backend: Get "https://10.0.0.5:10250/exec/'
    "desbordante-stage/api-88d4f6cd14-0/api?command=sh&command=-c&command=du+-sk&error=1"
    '&output=1": dial tcp 10.0.0.5:10250: connect: no route to host'
)


@pytest.fixture
def cfg() -> EnvConfig:
    return config("stage")


def release(k: Kube, tag: str = TAG) -> Release:
    options = Options(yes=True, timeout=120, clock=FakeClock())
    return Release(Context(), config("stage"), k, tag, rendered("stage", tag), options)


def bound(claim: dict[str, object]) -> dict[str, object]:
    """CLAIM as local-path leaves it: Bound, with the capacity it asked for."""
    spec = claim["spec"]
    assert isinstance(spec, dict)
    storage = spec["resources"]["requests"]["storage"]
    return {**claim, "status": {"phase": "Bound", "capacity": {"storage": storage}}}


def provision(server: FakeApiServer, namespace: str = STAGE) -> None:
    """What local-path and the StatefulSet controller write: every claim Bound, and each
    StatefulSet pod's claim of its volumeClaimTemplates, mounted in the pod."""
    for claim in server.all("PersistentVolumeClaim", namespace):
        server.seed(bound(claim))
    for sts in server.all("StatefulSet", namespace):
        for template in sts["spec"].get("volumeClaimTemplates", []):
            for index in range(sts["spec"].get("replicas", 1)):
                pod_name = f"{sts['metadata']['name']}-{index}"
                claim_name = f"{template['metadata']['name']}-{pod_name}"
                meta = {"name": claim_name, "namespace": namespace}
                claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta}
                server.seed(bound({**claim, "spec": template["spec"]}))
                pod = server.get("Pod", pod_name, namespace)
                assert pod is not None
                volume = {
                    "name": template["metadata"]["name"],
                    "persistentVolumeClaim": {"claimName": claim_name},
                }
                pod["spec"]["volumes"] = [*pod["spec"].get("volumes", []), volume]
                server.seed(pod)


def deployed(k3s: Cluster) -> Release:
    """Stage prepared and TAG deployed (verified and recorded), its volumes provisioned."""
    prepare(k3s.admin, "stage")
    x = release(k3s.admin)
    deploy_release(x)
    provision(k3s.server)
    return x


def write_ledger(server: FakeApiServer, *records: Record) -> None:
    """The release ledger holding exactly RECORDS (as deploys by several people leave it)."""
    server.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": LEDGER, "namespace": SYSTEM_NAMESPACE},
            "data": {record.key: record.to_json() for record in records},
        }
    )


def rows(
    cfg: EnvConfig, k: Kube, results: dict[re.Pattern[str], Result] | None = None
) -> dict[str, cluster_status.Row]:
    c = MockContext(run=usage() if results is None else results, repeat=True)
    return {row.part: row for row in cluster_status.collect(c, cfg, k)}


def pod_named(server: FakeApiServer, prefix: str) -> str:
    (name,) = [
        p["metadata"]["name"]
        for p in server.all("Pod", STAGE)
        if p["metadata"]["name"].startswith(prefix)
    ]
    return str(name)


def test_a_healthy_environment(
    k3s: Cluster, cfg: EnvConfig, wide_console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    x = deployed(k3s)
    image_id = k3s.kubelet.image_id(x.image)
    old, new, other = (
        Record(STAGE, "v1.3.0", f"{x.image}-old", image_id, "2026-11-20T10:00:00Z", "joe"),
        Record(STAGE, TAG, x.image, image_id, "2026-11-25T10:00:00Z", "jane"),
        Record("desbordante-prod", "v1.5.0", "i", "d", "2026-11-26T10:00:00Z", "x"),
    )
    write_ledger(k3s.server, old, new, other)
    c = MockContext(run=usage(), repeat=True)
    shown = {row.part: row for row in cluster_status.show(c, cfg, k3s.admin)}
    assert shown["release"].state == TAG
    digest = image_id.rpartition("sha256:")[2]
    assert (
        shown["release"].detail == f"ghcr.io/desbordante/desbordante-backend@sha256:{digest[:12]}"
    )
    assert (shown["last deploy"].state, shown["last deploy"].detail) == (
        TAG,
        "2026-11-25T10:00:00Z by jane",
    )
    for name in names.DEPLOYMENTS:
        assert shown[f"deployment/{name}"].state == "1/1 ready"
        assert shown[f"deployment/{name}"].detail == f"restarts 0, {TAG} sha256:{digest[:12]}"
    assert shown["statefulset/postgres"].detail.startswith("restarts 0, 17.6-bookworm sha256:")
    assert shown["pvc/uploads"].detail == (
        "requested 2Gi, capacity 2Gi; used 12.6 MB, 30.7 GB free on its disk"
    )
    assert shown["pvc/data-postgres-0"].detail.endswith("used 49.2 MB, 30.7 GB free on its disk")
    # HTTPS where the router asks Traefik for TLS (TLS_MODE=auto: self-signed for .localhost);
    # the redirect routers answer plain HTTP.
    assert shown["ingress/api"].state == "https://api.stage.desbordante.localhost/"
    assert shown["ingress/flower"].state == "https://flower.stage.desbordante.localhost/"
    assert shown["ingress/api-redirect"].state == "http://api.stage.desbordante.localhost/"
    assert all(row.healthy for row in shown.values())
    kubeconfig = cfg.toolkit.KUBECONFIG_PATH
    script = cluster_status.USAGE_SCRIPT
    assert [command for command in commands(c) if " exec " in command] == [
        f"kubectl --kubeconfig {kubeconfig} -n {STAGE} exec postgres-0 -c postgres -- sh -c "
        f"'{script}' _ /var/lib/postgresql/data",
        f"kubectl --kubeconfig {kubeconfig} -n {STAGE} exec rabbitmq-0 -c rabbitmq -- sh -c "
        f"'{script}' _ /var/lib/rabbitmq",
        f"kubectl --kubeconfig {kubeconfig} -n {STAGE} exec {pod_named(k3s.server, 'api-')} "
        f"-c api -- sh -c '{script}' _ /data/uploads",
    ]
    assert f"{STAGE} on {k3s.admin.host}" in capsys.readouterr().out


def test_a_crash_looping_worker_is_unhealthy_and_exits_1(k3s: Cluster, cfg: EnvConfig) -> None:
    deployed(k3s)
    k3s.kubelet.behave(names.WORKER, ready=False, waiting="CrashLoopBackOff", restarts=7)
    restart_workloads(k3s.admin.apps, STAGE, deployments=(names.WORKER,))
    with pytest.raises(Exit) as raised:
        cluster_status.show(MockContext(run=usage(), repeat=True), cfg, k3s.admin)
    assert raised.value.code == 1
    assert str(raised.value.message) == (
        f"{STAGE} is unhealthy: deployment/worker; "
        "`invoke logs --env stage --service NAME` shows why."
    )
    worker = rows(cfg, k3s.admin)["deployment/worker"]
    assert worker.state == "0/1 ready" and not worker.healthy
    crashing = pod_named(k3s.server, "worker-")
    assert "restarts 7" in worker.detail and f"{crashing}: CrashLoopBackOff" in worker.detail


def test_scaled_to_zero_missing_workloads_and_pending_claims_are_unhealthy(
    k3s: Cluster, cfg: EnvConfig
) -> None:
    deployed(k3s)
    k3s.admin.apps.patch_namespaced_deployment(names.API, STAGE, {"spec": {"replicas": 0}})
    k3s.admin.apps.delete_namespaced_deployment(names.FLOWER, STAGE)
    for name, phase in (("scratch", "Pending"), ("spare", "Bound")):
        k3s.server.seed(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": STAGE},
                "spec": {"resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": phase, "capacity": {"storage": "1Gi"}},
            }
        )
    c = MockContext(run=usage(), repeat=True)
    found = {row.part: row for row in cluster_status.collect(c, cfg, k3s.admin)}
    assert found["deployment/api"].state == "0/0 ready (scaled to 0)"
    assert found["deployment/flower"].state == "missing"
    assert found["deployment/flower"].detail == "not deployed"
    assert found["pvc/scratch"].state == "Pending"
    assert found["pvc/scratch"].detail == "requested 1Gi, capacity 1Gi"  # no usage: not bound
    assert found["release"].detail == "no api pod runs"
    assert found["pvc/spare"].detail.endswith("usage unknown (no running pod mounts it)")
    # No api pod runs: the uploads claim's usage is read in the worker, which mounts it too.
    assert found["pvc/uploads"].detail.endswith("used 12.6 MB, 30.7 GB free on its disk")
    worker = pod_named(k3s.server, "worker-")
    assert [cmd.split()[6:9] for cmd in commands(c) if "/data/uploads" in cmd] == [
        [worker, "-c", "worker"]
    ]
    unhealthy = {part for part, row in found.items() if not row.healthy}
    assert unhealthy == {"deployment/api", "deployment/flower", "pvc/scratch"}


def test_a_viewer_gets_the_table_without_exec_rights_or_the_ledger(
    k3s: Cluster, cfg: EnvConfig
) -> None:
    """kubectl exec with a viewer's kubeconfig answers Forbidden (pods/exec); the release
    ledger in desbordante-system is not the viewer's to read: both say so, neither is a
    failure."""
    deployed(k3s)
    forbidden = Result(
        stderr='Error from server (Forbidden): pods "api-88d4f6cd14-0" is forbidden: User '
        '"system:serviceaccount:desbordante-stage:access-jane" cannot create resource '
        '"pods/exec" in API group "" in the namespace "desbordante-stage"',
        exited=1,
    )
    found = rows(cfg, k3s.grant("viewer"), {re.compile(r".* exec .*"): forbidden})
    assert found["pvc/uploads"].detail == (
        "requested 2Gi, capacity 2Gi; usage unknown (this kubeconfig may not exec into pods)"
    )
    assert found["last deploy"].state == "-"
    assert found["last deploy"].detail.startswith("This kubeconfig may not read the release ledger")
    assert found["last verify"].state == "passed"  # in the namespace: the viewer reads it
    assert found["release"].state == TAG
    assert all(row.healthy for row in found.values())


def test_a_devops_kubeconfig_reads_every_row(k3s: Cluster, cfg: EnvConfig) -> None:
    deployed(k3s)
    found = rows(cfg, k3s.grant("devops"))
    assert found["last deploy"].state == TAG
    assert found["pvc/uploads"].detail.endswith("used 12.6 MB, 30.7 GB free on its disk")
    assert all(row.healthy for row in found.values())


def test_nothing_deployed_nothing_recorded(k3s: Cluster, cfg: EnvConfig) -> None:
    prepare(k3s.admin, "stage")
    found = rows(cfg, k3s.admin)
    assert (found["last deploy"].state, found["last deploy"].detail) == ("-", "no deploy recorded")
    assert (found["last verify"].state, found["last verify"].detail) == (
        "-",
        "never verified (`invoke verify --env ENV` runs it)",
    )
    assert found["release"].detail == "no api pod runs"
    assert {part for part, row in found.items() if not row.healthy} == {
        f"{kind}/{name}"
        for kind, workloads in (
            ("deployment", names.DEPLOYMENTS),
            ("statefulset", names.STATEFULSETS),
        )
        for name in workloads
    }


# --- regression: the usage cell held the whole exec error -------------------------------------


def test_an_unreachable_kubelet_is_one_short_reason_in_the_usage_cell(
    k3s: Cluster, cfg: EnvConfig
) -> None:
    """A real server put kubectl's whole error into the cell: the kubelet URL with its query
    string and the dial error. Now it is one short reason."""
    deployed(k3s)
    failed = Result(stderr=KUBELET_UNREACHABLE, exited=1)
    found = rows(cfg, k3s.admin, {re.compile(r".* exec .*"): failed})
    for claim in ("uploads", "data-postgres-0", "data-rabbitmq-0"):
        detail = found[f"pvc/{claim}"].detail
        assert detail.endswith(
            "; usage unknown (the node's kubelet is not reachable from the API server)"
        ), detail
        assert "10250" not in detail and "?" not in detail and "dial tcp" not in detail


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (KUBELET_UNREACHABLE, "the node's kubelet is not reachable from the API server"),
        ("error: unable to upgrade connection: container not found (\"api\")", (
            "its container is not running")),
        ('Error from server (Forbidden): pods "x" is forbidden: cannot create "pods/exec"', (
            "this kubeconfig may not exec into pods")),
        ("", "exec exited 7"),
        ("error: Get https://10.0.0.5:10250/x?y=1 failed", "error: Get failed"),
    ],
)  # fmt: skip
def test_exec_failure_is_one_short_reason(stderr: str, reason: str) -> None:
    assert cluster_status.exec_failure(stderr, 7) == reason


def test_an_unknown_exec_error_is_cut_short() -> None:
    text = cluster_status.exec_failure("sh: " + "x" * 500 + "\n\n  second line", 1)
    assert len(text) == cluster_status.MAX_REASON and text.endswith("…") and "\n" not in text


# --- the last verification --------------------------------------------------------------------


def test_the_last_verification_passed_after_a_deploy_and_failed_after_a_failed_verify(
    k3s: Cluster, cfg: EnvConfig
) -> None:
    x = deployed(k3s)
    passed = rows(cfg, k3s.admin)["last verify"]
    outcome = verify.last(k3s.admin.core, STAGE)
    assert outcome is not None and outcome.passed
    assert (passed.state, passed.healthy) == ("passed", True)
    assert passed.detail == f"{TAG} at {outcome.at} ({x.rendered.verify_job})"

    k3s.kubelet.behave("verify-", job="fail", logs="verify: task FAILED: 4 FDs, expected 5\n")
    failure = f"The verify Job {x.rendered.verify_job} of {TAG} failed"
    with pytest.raises(Exit, match=failure), ExitStack() as stack:
        execute(verify.verify_plan(Context(), cfg, k3s.admin, None, stack))
    failed = rows(cfg, k3s.admin)["last verify"]
    assert (failed.state, failed.healthy) == ("failed", False)
    assert failed.detail.startswith(f"{TAG} at ")
    assert failed.detail.endswith(
        f"({x.rendered.verify_job}): verify: task FAILED: 4 FDs, expected 5"
    )
    with pytest.raises(Exit, match=f"{STAGE} is unhealthy: last verify;"):
        cluster_status.show(MockContext(run=usage(), repeat=True), cfg, k3s.admin)
