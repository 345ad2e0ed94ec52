"""`invoke status --env stage|prod`: the rows read from an in-memory cluster, usage via the
generated `kubectl exec` commands (MockContext), and the exit code when something is unhealthy."""

from __future__ import annotations

import pytest
from invoke import Exit, Result
from kubernetes.client.exceptions import ApiException
from support.fake_cluster import DIGEST, IMAGE, TAG, ScalingContext, claim, fake_cluster, pod
from support.fake_cluster import Networking as FakeNetworking

from desbordante_ops.cluster import names
from desbordante_ops.cluster import status as cluster_status
from desbordante_ops.cluster.kube import Kube
from desbordante_ops.cluster.releases import Release, write_entry
from desbordante_ops.core.settings import EnvConfig, load_config

NAMESPACE = "desbordante-stage"
DF_UPLOADS = "12345\n/dev/sda1 41152736 10000000 30000000 25% /\n"
DF_POSTGRES = "48000\n/dev/sda1 41152736 10000000 30000000 25% /\n"
USAGE = {
    r"-c api -- sh -c": Result(stdout=DF_UPLOADS),
    r"-c postgres -- sh -c": Result(stdout=DF_POSTGRES),
}
INGRESS = FakeNetworking({"api": "stage.desbordante.local", "flower": "flower.stage.local"})


@pytest.fixture
def cfg() -> EnvConfig:
    return load_config("stage", environ={})


def rows(
    cfg: EnvConfig, k: Kube, results: dict[str, Result] | None = None
) -> dict[str, cluster_status.Row]:
    c = ScalingContext(k, USAGE if results is None else results)
    return {row.part: row for row in cluster_status.collect(c, cfg, k, INGRESS)}


def test_a_healthy_environment(cfg: EnvConfig, capsys: pytest.CaptureFixture[str]) -> None:
    k = fake_cluster()
    for tag, when, by in (
        (TAG, "2026-11-25T10:00:00Z", "jane"),
        ("v1.3.0", "2026-11-20T10:00:00Z", "joe"),
    ):
        entry = Release(NAMESPACE, tag, f"{IMAGE}:{tag}", f"{IMAGE}@{DIGEST}", when, by)
        write_entry(k.core, entry)
    write_entry(k.core, Release("desbordante-prod", "v1.5.0", "i", "d", "2026-11-26T1", "x"))
    c = ScalingContext(k, USAGE)
    shown = {row.part: row for row in cluster_status.show(c, cfg, k, INGRESS)}
    assert shown["release"].state == TAG
    assert shown["release"].detail == f"{IMAGE}@sha256:{DIGEST[7:19]}"
    assert (shown["last deploy"].state, shown["last deploy"].detail) == (
        TAG,
        "2026-11-25T10:00:00Z by jane",
    )
    for name in names.DEPLOYMENTS:
        assert shown[f"deployment/{name}"].state == "1/1 ready"
    assert shown["statefulset/postgres"].detail.startswith("restarts 0, 17.6-bookworm sha256:")
    assert shown["pvc/uploads"].detail == (
        "requested 2Gi, capacity 2Gi; used 12.6 MB, 30.7 GB free on its disk"
    )
    assert shown["pvc/data-postgres-0"].detail.endswith("used 49.2 MB, 30.7 GB free on its disk")
    assert shown["ingress/api"].state == "http://stage.desbordante.local/"
    assert all(row.healthy for row in shown.values())
    usage = [command for command in c.commands if " exec " in command]
    assert usage == [
        f"kubectl --kubeconfig {cfg.toolkit.KUBECONFIG_PATH} -n {NAMESPACE} exec api-7d9f-abcde "
        f"-c api -- sh -c '{cluster_status.USAGE_SCRIPT}' _ /data/uploads",
        f"kubectl --kubeconfig {cfg.toolkit.KUBECONFIG_PATH} -n {NAMESPACE} exec postgres-0 "
        f"-c postgres -- sh -c '{cluster_status.USAGE_SCRIPT}' _ /var/lib/postgresql/data",
    ]
    assert "desbordante-stage on https://127.0.0.1:6443" in capsys.readouterr().out


def test_a_crash_looping_worker_is_unhealthy_and_exits_1(cfg: EnvConfig) -> None:
    k = fake_cluster()
    k.apps.workloads[names.WORKER].ready = 0
    k.core.pods = [p for p in k.core.pods if not p.metadata.name.startswith("worker")]
    k.core.pods.append(
        pod("worker-5c4b-zzzzz", names.WORKER, ready=False, restarts=7, waiting="CrashLoopBackOff")
    )
    with pytest.raises(Exit) as raised:
        cluster_status.show(ScalingContext(k, USAGE), cfg, k, INGRESS)
    assert raised.value.code == 1
    assert str(raised.value.message) == (
        f"{NAMESPACE} is unhealthy: deployment/worker; "
        "`invoke logs --env stage --service NAME` shows why."
    )
    worker = rows(cfg, k)["deployment/worker"]
    assert worker.state == "0/1 ready" and not worker.healthy
    assert "restarts 7" in worker.detail and "worker-5c4b-zzzzz: CrashLoopBackOff" in worker.detail


def test_scaled_to_zero_missing_workloads_and_pending_claims_are_unhealthy(
    cfg: EnvConfig,
) -> None:
    k = fake_cluster()
    k.apps.scale(names.API, 0)
    del k.apps.workloads[names.FLOWER]
    k.core.claims.append(claim("scratch", "1Gi", phase="Pending"))
    found = rows(cfg, k)
    assert found["deployment/api"].state == "0/0 ready (scaled to 0)"
    assert found["deployment/flower"].state == "missing"
    assert found["pvc/scratch"].state == "Pending"
    assert found["release"].detail == "no api pod runs"
    assert found["pvc/uploads"].detail.endswith("usage unknown (no running pod mounts it)")
    unhealthy = {part for part, row in found.items() if not row.healthy}
    assert unhealthy == {"deployment/api", "deployment/flower", "pvc/scratch"}


def test_a_viewer_without_exec_rights_still_gets_the_table(cfg: EnvConfig) -> None:
    forbidden = Result(
        stderr='Error from server (Forbidden): pods "api-7d9f-abcde" is forbidden: User '
        '"system:serviceaccount:desbordante-stage:access-jane" cannot create resource '
        '"pods/exec"',
        exited=1,
    )
    found = rows(cfg, fake_cluster(), {r" exec ": forbidden})
    assert found["pvc/uploads"].detail.endswith(
        "usage unknown (this kubeconfig may not exec into pods)"
    )
    assert all(row.healthy for row in found.values())


def test_no_release_recorded(cfg: EnvConfig) -> None:
    found = rows(cfg, fake_cluster())
    assert (found["last deploy"].state, found["last deploy"].detail) == ("-", "no deploy recorded")


def test_a_kubeconfig_that_may_not_read_the_ledger(cfg: EnvConfig) -> None:
    k = fake_cluster()

    def forbidden(name: str, namespace: str) -> None:
        raise ApiException(status=403, reason="Forbidden")

    k.core.read_namespaced_config_map = forbidden
    row = rows(cfg, k)["last deploy"]
    assert row.state == "-" and row.healthy
    assert row.detail.startswith("This kubeconfig may not read the release ledger")
