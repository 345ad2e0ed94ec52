"""`doctor --env stage|prod` against the fake API server over loopback HTTPS (set up like a fresh
k3s: its node, local-path, Traefik and its CRDs), through the toolkit's own `connect`: every row,
each failure with its fix, a credential's "not checked" rows, nothing but Secret names shown.

The clock-skew row reads the HTTP Date header, which only the HTTPS server sends; its clock is
set per test (`server_clock`). The memory and disk rows read requests from a small hand-made
Rendered, so the arithmetic is visible here.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from invoke import Context, Exit, MockContext
from kubernetes.client.exceptions import ApiException
from support.fakeapi import server as fakeapi_server
from support.fakeapi.connect import config_for, grant
from support.fakeapi.k3s import NODE_MEMORY, config, prepare
from support.fakeapi.server import VERSION, FakeApiServer

from desbordante_ops.cluster import doctor
from desbordante_ops.cluster.host.k3s import load_lock
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.checks import print_report, run_checks
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig
from desbordante_ops.tasks import config as config_tasks

SERVED = VERSION["gitVersion"]  # what the fake API server reports
NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
MI = 1024**2
GI = 1024**3
STAGE = "desbordante-stage"
CLUSTER_WIDE_ROWS = (
    "Traefik and its CRDs",
    "default StorageClass",
    "memory for stage + prod",
    "disk under the volumes",
)
Rows = dict[str, tuple[bool, str, str]]


def rendered(env: str, memory: str = "256Mi", storage: str = "2Gi") -> Rendered:
    """Two replicas of a Deployment, a StatefulSet with a claim template and one claim; the
    migrate Job (MEMORY) and the smaller verify Job (64 Mi)."""
    container = {"name": "c", "resources": {"requests": {"memory": memory}}}
    pod_spec = {"containers": [container], "initContainers": [container]}
    small = {"name": "v", "resources": {"requests": {"memory": "64Mi"}}}
    claim = {"spec": {"resources": {"requests": {"storage": storage}}}}
    docs = [
        {
            "kind": "Deployment",
            "metadata": {"name": "api"},
            "spec": {"replicas": 2, "template": {"spec": pod_spec}},
        },
        {
            "kind": "StatefulSet",
            "metadata": {"name": "postgres"},
            "spec": {"template": {"spec": pod_spec}, "volumeClaimTemplates": [claim]},
        },
        {"kind": "PersistentVolumeClaim", "metadata": {"name": "uploads"}, **claim},
        {"kind": "Job", "metadata": {"name": "migrate"}, "spec": {"template": {"spec": pod_spec}}},
        {
            "kind": "Job",
            "metadata": {"name": "verify"},
            "spec": {"template": {"spec": {"containers": [small]}}},
        },
    ]
    return Rendered(env, f"desbordante-{env}", "img:doctor", "migrate", "", docs, "verify")


@pytest.fixture
def server_clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, dt.datetime | None]:
    """The fake API server's clock, as its Date header shows it: NOW unless a test moves it
    (None: this machine's clock)."""
    clock: dict[str, dt.datetime | None] = {"now": NOW}

    def date_time_string(self: Any, timestamp: float | None = None) -> str:
        return email.utils.format_datetime(clock["now"] or dt.datetime.now(dt.UTC), usegmt=True)

    monkeypatch.setattr(fakeapi_server._Handler, "date_time_string", date_time_string)
    return clock


def decode_paths(server: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unescape request paths before the fake sees them, as kube-apiserver does: the client
    sends nodes/node-1/proxy/stats%2Fsummary (a path parameter is quoted), which the fake's
    node proxy does not decode itself."""
    answer = server.handle

    def handle(method: str, raw_path: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        path, sep, query = raw_path.partition("?")
        return answer(method, unquote(path) + sep + query, *args, **kwargs)

    monkeypatch.setattr(server, "handle", handle)


def pod(name: str, namespace: str, memory: str, phase: str = "Running") -> dict[str, Any]:
    """A pod (as its kubelet reports it) whose one container requests MEMORY."""
    container = {"name": "c", "resources": {"requests": {"memory": memory}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [container]},
        "status": {"phase": phase},
    }


def kubelet_sees(server: FakeApiServer, capacity: int, available: int) -> None:
    """What the node's kubelet reports about its filesystem (nodes/proxy stats/summary)."""
    server.node_stats["node-1"] = {
        "node": {"fs": {"capacityBytes": capacity, "availableBytes": available}}
    }


@pytest.fixture
def cluster(
    fake_api: FakeApiServer,
    admin: Kube,
    server_clock: dict[str, dt.datetime | None],
    monkeypatch: pytest.MonkeyPatch,
) -> Kube:
    """A healthy cluster: both environments' Secrets, a system pod requesting 70 Mi, the
    kubelet's view of the node's disk (40 GiB, 25 GiB free)."""
    decode_paths(fake_api, monkeypatch)
    for env in CLUSTER_ENVS:
        prepare(admin, env)
    fake_api.seed(pod("coredns-1", "kube-system", "70Mi"))
    kubelet_sees(fake_api, capacity=40 * GI, available=25 * GI)
    return admin


@pytest.fixture
def cfg(admin_kubeconfig: Path) -> EnvConfig:
    return config_for(admin_kubeconfig, "stage")


def checked(cfg: EnvConfig, pinned: str = SERVED) -> list[Any]:
    return run_checks(
        doctor.ClusterDoctor(
            MockContext(), cfg, render_env=rendered, now=lambda: NOW, pinned=lambda: pinned
        ).checks()
    ).rows


def rows_of(cfg: EnvConfig, pinned: str = SERVED) -> Rows:
    """name -> (ok, detail, fix shown) of every row."""
    return {
        check.name: (result.ok, result.detail, result.fix or check.fix)
        for check, result in checked(cfg, pinned)
    }


def edit(server: FakeApiServer, kind: str, name: str, namespace: str = "", **changes: Any) -> None:
    """Change a stored object as its controller would (CHANGES: top-level fields)."""
    obj = server.get(kind, name, namespace)
    assert obj is not None
    server.seed({**obj, **changes})


def test_a_healthy_cluster_passes_every_row(
    cluster: Kube, cfg: EnvConfig, fake_api: FakeApiServer
) -> None:
    rows = rows_of(cfg)
    failed = {name: row for name, row in rows.items() if not row[0]}
    assert failed == {}
    assert rows["API server"][1] == f"{fake_api.url}: {SERVED} (k3s.lock pins {SERVED})"
    assert rows["namespace"][1] == f"{STAGE}, Pod Security `restricted` enforced"
    assert rows["Traefik and its CRDs"][1] == "kube-system/traefik ready, traefik.io/v1alpha1"
    assert rows["default StorageClass"][1] == "local-path (default)"
    # Each env: api 2 x 256 Mi + postgres 256 Mi + the larger of its Jobs (migrate, 256 Mi)
    # = 1 Gi; both: 2 Gi.
    assert NODE_MEMORY == "4Gi"
    assert rows["memory for stage + prod"][1] == (
        "node allocatable 4.00 GiB, other pods request 0.07 GiB, stage + prod request 2.00 GiB: "
        "1.93 GiB to spare"
    )
    # Each env: postgres claim template 2 Gi + uploads 2 Gi; both: 8 Gi.
    assert rows["disk under the volumes"][1].startswith(
        "node disk 40.00 GiB, 25.00 GiB free; volumes of stage + prod request 8.00 GiB"
    )
    assert rows["Secrets"][1] == ", ".join(secret.NAME for secret in names.SECRETS)
    assert rows["clock skew"][:2] == (True, "this machine is 0.0s behind the API server")


def test_pods_of_our_namespaces_and_finished_pods_are_not_other_requests(
    cluster: Kube, cfg: EnvConfig, fake_api: FakeApiServer
) -> None:
    """What stage and prod request is counted from their manifests, not from their pods."""
    for name, namespace, phase in (
        ("api-1", STAGE, "Running"),
        ("job-1", "kube-system", "Succeeded"),
        ("job-2", "kube-system", "Failed"),
    ):
        fake_api.seed(pod(name, namespace, "1Gi", phase))
    assert "other pods request 0.07 GiB" in rows_of(cfg)["memory for stage + prod"][1]


def test_an_unreachable_api_server_fails_once_and_skips_the_rest(
    fake_api: FakeApiServer, admin_kubeconfig: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    kubeconfig = yaml.safe_load(admin_kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    path = tmp_path / "gone.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    rows = rows_of(config_for(path, "stage"))
    assert rows["API server"][0] is False
    assert rows["API server"][1].startswith(
        f"Kubernetes API at https://127.0.0.1:{closed} (kubeconfig {path}) is not reachable: "
    )
    assert "systemctl start k3s" in rows["API server"][2]
    for name in (
        "namespace",
        *CLUSTER_WIDE_ROWS,
        "Secrets",
        "clock skew",
    ):
        assert rows[name] == (
            False,
            "skipped: the API server is not reachable",
            "fix the API server row first",
        )


def test_each_problem_fails_its_row_with_its_fix(
    cluster: Kube,
    cfg: EnvConfig,
    fake_api: FakeApiServer,
    server_clock: dict[str, dt.datetime | None],
) -> None:
    server_clock["now"] = NOW - dt.timedelta(seconds=42)
    fake_api.crds.discard("traefik.io")
    edit(fake_api, "Deployment", "traefik", "kube-system", status={"readyReplicas": 0})
    edit(
        fake_api,
        "StorageClass",
        "local-path",
        metadata={"name": "local-path", "annotations": {}},
    )
    edit(
        fake_api,
        "Namespace",
        STAGE,
        metadata={"name": STAGE, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
    )
    fake_api.remove("Secret", names.FlowerSecret.NAME, STAGE)
    node = fake_api.get("Node", "node-1")
    assert node is not None
    node["status"]["allocatable"]["memory"] = "1Gi"
    node["status"]["conditions"].append({"type": "DiskPressure", "status": "True"})
    fake_api.seed(node)
    rows = rows_of(cfg, pinned="v1.36.4+k3s1")
    failed = {name for name, row in rows.items() if not row[0]}
    assert failed == {
        "API server",
        "namespace",
        *CLUSTER_WIDE_ROWS,
        "Secrets",
        "clock skew",
    }
    assert "sudo invoke k3s.install" in rows["API server"][2]
    assert "to get v1.36.4+k3s1" in rows["API server"][2]
    assert rows["namespace"][2].startswith(
        f"kubectl label namespace {STAGE} --overwrite "
        "pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version"
    )
    assert rows["Traefik and its CRDs"][1] == "traefik 0/1 ready; no traefik.io CRDs (Middleware)"
    assert "--disable traefik" in rows["Traefik and its CRDs"][2]  # for an admin who can look
    assert rows["default StorageClass"][1] == "no default StorageClass (classes: local-path)"
    assert "is-default-class" in rows["default StorageClass"][2]
    assert rows["memory for stage + prod"][1].endswith("1.07 GiB short")
    assert rows["disk under the volumes"][1].startswith("DiskPressure on node-1")
    assert rows["Secrets"][1:] == (
        f"missing in {STAGE}: {names.FlowerSecret.NAME}",
        "invoke secrets.generate --env stage",
    )
    assert rows["clock skew"][1] == "this machine is 42.0s ahead of the API server"


def test_disk_smaller_than_the_volumes_or_nearly_full(
    cluster: Kube, cfg: EnvConfig, fake_api: FakeApiServer
) -> None:
    kubelet_sees(fake_api, capacity=6 * GI, available=5 * GI)
    assert rows_of(cfg)["disk under the volumes"][0] is False  # 8 GiB requested
    kubelet_sees(fake_api, capacity=40 * GI, available=100 * MI)
    assert rows_of(cfg)["disk under the volumes"][0] is False  # under MIN_FREE_DISK_MB
    del fake_api.node_stats["node-1"]  # the kubelet does not answer: the node's capacity only
    row = rows_of(cfg)["disk under the volumes"]
    assert row[0] is False and row[1].startswith("node disk 40.00 GiB, 0.00 GiB free")


def test_no_secret_value_reaches_the_report(
    cluster: Kube, cfg: EnvConfig, fake_api: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    values = [
        base64.b64decode(value).decode()
        for secret in fake_api.all("Secret")
        if secret["metadata"]["namespace"].startswith("desbordante-")
        for value in (secret.get("data") or {}).values()
    ]
    report = run_checks(
        doctor.ClusterDoctor(
            MockContext(), cfg, render_env=rendered, now=lambda: NOW, pinned=lambda: SERVED
        ).checks()
    )
    print_report(report)
    shown = repr(report.rows) + capsys.readouterr().out
    assert len(values) >= 2 * len(names.SECRETS)
    assert not any(value in shown for value in values)


def test_the_task_checks_the_cluster_of_env(
    tmp_path: Path, wide_console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changed by design: TLS_MODE is `auto`, and prod's shipped hosts are
    *.desbordante.localhost, so the effective mode is selfsigned (the row says why)."""
    missing = tmp_path / "no.kubeconfig"
    with pytest.raises(Exit) as raised:
        config_tasks.doctor(MockContext(), env="prod", set_=[f"KUBECONFIG_PATH={missing}"])
    assert "API server" in str(raised.value.message)
    out = " ".join(capsys.readouterr().out.split())
    assert "doctor --env prod (desbordante-prod)" in out and "No kubeconfig" in out
    assert "TLS mode (prod)" in out and "selfsigned: Traefik's own certificate" in out
    assert "TLS_MODE=auto" in out


# --- regression: a devops or viewer credential ------------------------------------------------


def test_a_devops_kubeconfig_gets_one_short_not_checked_row_per_cluster_wide_check(
    cluster: Kube,
    server_clock: dict[str, dt.datetime | None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wide_console: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoke doctor --env stage` with a devops kubeconfig printed raw ForbiddenException dumps
    (HTTP headers included) in four rows, and the Traefik row's fix said not to install k3s
    with --disable traefik. Each is now one short row saying what it needs and who runs it;
    the doctor passes."""
    server_clock["now"] = None  # the task reads this machine's clock
    kubeconfig = grant(cluster, tmp_path, "devops")
    monkeypatch.setattr(doctor, "load_lock", lambda: replace(load_lock(), version=SERVED))
    config_tasks.doctor(Context(), env="stage", set_=[f"KUBECONFIG_PATH={kubeconfig}"])  # no Exit
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    admin = "a cluster admin runs `invoke doctor --env stage` with the admin kubeconfig"
    needs = {
        "Traefik and its CRDs": "needs get deployments.apps in kube-system",
        "default StorageClass": "needs list storageclasses.storage.k8s.io (cluster-wide)",
        "memory for stage + prod": "needs list nodes (cluster-wide)",
        "disk under the volumes": "needs list nodes (cluster-wide)",
    }
    for name, need in needs.items():
        cells = [" ".join(cell.split()) for cell in lines[name].split("│")[1:-1]]
        assert cells == [name, f"not checked: {need}; {admin}", ""], lines[name]
    for name in ("API server", "namespace", "Secrets", "clock skew"):
        assert " ok " in lines[name], lines[name]
    for dump in ("HTTP response headers", "Content-Type", "Forbidden", "--disable traefik"):
        assert dump not in out


def test_a_viewer_may_not_read_secrets_either_which_is_not_a_failure(
    cluster: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    viewer = config_for(grant(cluster, tmp_path, "viewer"), "stage")
    report = run_checks(
        doctor.ClusterDoctor(
            MockContext(), viewer, render_env=rendered, now=lambda: NOW, pinned=lambda: SERVED
        ).checks()
    )
    unchecked = {check.name: result.detail for check, result in report.rows if result.unchecked}
    assert set(unchecked) == {*CLUSTER_WIDE_ROWS, "Secrets"}
    assert unchecked["Secrets"].startswith(f"not checked: needs get secrets in {STAGE}; ")
    assert report.failed_required == []


def test_another_api_error_fails_its_row_in_one_line(
    cluster: Kube, cfg: EnvConfig, fake_api: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a 403 means "may not read"; any other error answer fails its row, in one line
    (never the response's headers or body)."""
    answer = fake_api.handle

    def failing(method: str, path: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        if path.startswith("/apis/storage.k8s.io/v1/storageclasses"):
            return 500, {"kind": "Status", "code": 500, "message": "etcdserver: leader changed"}
        return answer(method, path, *args, **kwargs)

    monkeypatch.setattr(fake_api, "handle", failing)
    rows = {check.name: result for check, result in checked(cfg)}
    row = rows["default StorageClass"]
    assert (row.ok, row.unchecked, row.detail) == (False, False, "HTTP 500 Internal Server Error")
    assert rows["Secrets"].ok  # the other rows are read as usual


def test_not_checked_names_what_a_denial_needs() -> None:
    def denied(message: str) -> ApiException:
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = json.dumps({"kind": "Status", "code": 403, "message": message})
        return exc

    namespaced = denied(
        'secrets "x" is forbidden: User "u" cannot get resource "secrets" in API group "" '
        'in the namespace "desbordante-prod"'
    )
    result = doctor.not_checked(namespaced, "prod")
    assert result.unchecked and not result.ok
    assert result.detail == (
        "not checked: needs get secrets in desbordante-prod; a cluster admin runs "
        "`invoke doctor --env prod` with the admin kubeconfig"
    )
    unparsable = ApiException(status=403, reason="Forbidden")
    assert doctor.not_checked(unparsable, "stage").detail.startswith(
        "not checked: needs rights this kubeconfig does not have; "
    )


def test_each_environment_is_checked_against_both_renders() -> None:
    """The requests are those of stage and prod together: they share the node."""
    asked: list[str] = []

    def render(env: str) -> Rendered:
        asked.append(env)
        return rendered(env)

    checker = doctor.ClusterDoctor(MockContext(), config("stage"), render_env=render)
    assert checker.needs() == (2 * 1024 * MI, 2 * 4 * GI)
    checker.needs()
    assert asked == list(CLUSTER_ENVS)  # rendered once
