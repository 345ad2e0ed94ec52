"""`doctor --env stage|prod`: every row against in-memory API fakes (no cluster here), each
failure with its fix, and nothing but Secret names in the output."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, MockContext
from kubernetes import client as k8s
from support.fake_cluster import ClusterApps, ClusterCore, fake_cluster

from desbordante_ops.cluster import checks, names
from desbordante_ops.cluster import secrets as cluster_secrets
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.checks import run_checks
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig, load_config
from desbordante_ops.tasks import config as config_tasks

PINNED = "v1.36.4+k3s1"
NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
MI = 1024**2
GI = 1024**3


class Version:
    def __init__(self, version: str = PINNED, skew: float = 0.0) -> None:
        self.version = version
        self.skew = skew

    def get_code_with_http_info(self, **kw: Any) -> tuple[Any, int, dict[str, str]]:
        server = NOW - dt.timedelta(seconds=self.skew)
        date = email.utils.format_datetime(server, usegmt=True)
        return (
            k8s.VersionInfo(
                git_version=self.version,
                build_date="",
                compiler="",
                git_commit="",
                git_tree_state="",
                go_version="",
                major="1",
                minor="36",
                platform="linux/amd64",
            ),
            200,
            {"Date": date},
        )


class Discovery:
    def __init__(self, groups: tuple[str, ...] = ("apps", "traefik.io")) -> None:
        self.groups = groups

    def get_api_versions(self) -> Any:
        return k8s.V1APIGroupList(
            groups=[
                k8s.V1APIGroup(
                    name=name,
                    preferred_version=k8s.V1GroupVersionForDiscovery(
                        group_version=f"{name}/v1alpha1", version="v1alpha1"
                    ),
                    versions=[],
                )
                for name in self.groups
            ]
        )


class Storage:
    def __init__(self, default: bool = True) -> None:
        self.default = default

    def list_storage_class(self) -> Any:
        annotations = {checks.DEFAULT_CLASS_ANNOTATIONS[0]: "true"} if self.default else {}
        return k8s.V1StorageClassList(
            items=[
                k8s.V1StorageClass(
                    metadata=k8s.V1ObjectMeta(name="local-path", annotations=annotations),
                    provisioner="rancher.io/local-path",
                )
            ]
        )


def node(memory: str = "1900Mi", pressure: bool = False) -> Any:
    return k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name="server"),
        status=k8s.V1NodeStatus(
            allocatable={"memory": memory, "ephemeral-storage": "38Gi"},
            capacity={"memory": memory, "ephemeral-storage": "40Gi"},
            conditions=[
                k8s.V1NodeCondition(type="DiskPressure", status="True" if pressure else "False")
            ],
        ),
    )


def system_pod(memory: str) -> Any:
    container = k8s.V1Container(
        name="coredns", resources=k8s.V1ResourceRequirements(requests={"memory": memory})
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="coredns-1", namespace="kube-system"),
        spec=k8s.V1PodSpec(containers=[container]),
        status=k8s.V1PodStatus(phase="Running"),
    )


def rendered(env: str, memory: str = "256Mi", storage: str = "2Gi") -> Rendered:
    """Two replicas of a Deployment, a StatefulSet with a claim template and one claim."""
    container = {"name": "c", "resources": {"requests": {"memory": memory}}}
    pod_spec = {"containers": [container], "initContainers": [container]}
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
    ]
    return Rendered(env, f"desbordante-{env}", "img:doctor", "", "", docs)


@pytest.fixture
def cfg() -> EnvConfig:
    return load_config("stage", environ={})


def healthy_cluster(cfg: EnvConfig) -> checks.ClusterApis:
    k = fake_cluster()
    core: ClusterCore = k.core
    core.namespaces[cfg.namespace] = k8s.V1Namespace(
        metadata=k8s.V1ObjectMeta(name=cfg.namespace, labels=dict(names.NAMESPACE_LABELS))
    )
    for env in CLUSTER_ENVS:
        cluster_secrets.generate(core, k.apps, load_config(env, environ={}), f"desbordante-{env}")
    core.nodes = [node()]
    core.other_pods = [system_pod("70Mi")]
    core.node_fs = {"server": {"capacityBytes": 40 * GI, "availableBytes": 25 * GI}}
    apps: ClusterApps = k.apps
    apps.traefik = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="traefik"),
        spec=k8s.V1DeploymentSpec(replicas=1, selector=k8s.V1LabelSelector(), template={}),
        status=k8s.V1DeploymentStatus(ready_replicas=1),
    )
    return checks.ClusterApis(kube=k, version=Version(), discovery=Discovery(), storage=Storage())


def doctor(
    cfg: EnvConfig,
    apis: checks.ClusterApis | Callable[[EnvConfig], checks.ClusterApis],
    render_env: Callable[[str], Rendered] = rendered,
) -> dict[str, tuple[bool, str, str]]:
    """name -> (ok, detail, fix shown) of every row."""
    connect = apis if callable(apis) else (lambda _: apis)
    report = run_checks(
        checks.ClusterDoctor(
            MockContext(), cfg, connect, render_env, now=lambda: NOW, pinned=lambda: PINNED
        ).checks()
    )
    return {
        check.name: (result.ok, result.detail, result.fix or check.fix)
        for check, result in report.rows
    }


def test_a_healthy_cluster_passes_every_row(cfg: EnvConfig) -> None:
    rows = doctor(cfg, healthy_cluster(cfg))
    failed = {name: row for name, row in rows.items() if not row[0] and name != "kubectl"}
    assert failed == {}
    assert rows["API server"][1] == f"https://127.0.0.1:6443: {PINNED} (k3s.lock pins {PINNED})"
    assert rows["Traefik and its CRDs"][1] == "kube-system/traefik ready, traefik.io/v1alpha1"
    assert rows["default StorageClass"][1] == "local-path (default)"
    # Each env: api 2 x 256 Mi + postgres 256 Mi = 768 Mi; both: 1536 Mi; the Job is not counted.
    assert rows["memory for stage + prod"][1] == (
        "node allocatable 1.86 GiB, other pods request 0.07 GiB, stage + prod request 1.50 GiB: "
        "0.29 GiB to spare"
    )
    # Each env: postgres claim template 2 Gi + uploads 2 Gi; both: 8 Gi.
    assert rows["disk under the volumes"][1].startswith(
        "node disk 40.00 GiB, 25.00 GiB free; volumes of stage + prod request 8.00 GiB"
    )
    assert rows["Secrets"][1] == ", ".join(secret.NAME for secret in names.SECRETS)
    assert rows["clock skew"] == (
        True,
        "this machine is 0.0s behind the API server",
        rows["clock skew"][2],
    )


def test_an_unreachable_api_server_fails_once_and_skips_the_rest(cfg: EnvConfig) -> None:
    def connect(_: EnvConfig) -> checks.ClusterApis:
        raise Exit("Kubernetes API at https://10.0.0.9:6443 (kubeconfig /k) is not reachable: X.")

    rows = doctor(cfg, connect)
    assert rows["API server"][:2] == (
        False,
        "Kubernetes API at https://10.0.0.9:6443 (kubeconfig /k) is not reachable: X.",
    )
    assert "systemctl start k3s" in rows["API server"][2]
    for name in (
        "namespace",
        "Traefik and its CRDs",
        "Secrets",
        "clock skew",
        "memory for stage + prod",
    ):
        assert rows[name] == (
            False,
            "skipped: the API server is not reachable",
            "fix the API server row first",
        )


def test_each_problem_fails_its_row_with_its_fix(cfg: EnvConfig) -> None:
    apis = healthy_cluster(cfg)
    apis.version = Version("v1.35.0+k3s1", skew=42)
    apis.discovery = Discovery(("apps",))
    apis.storage = Storage(default=False)
    core: ClusterCore = apis.kube.core
    core.namespaces[cfg.namespace].metadata.labels = {
        "pod-security.kubernetes.io/enforce": "baseline"
    }
    del core.secrets[(cfg.namespace, names.FlowerSecret.NAME)]
    core.nodes = [node(memory="1Gi", pressure=True)]
    rows = doctor(cfg, apis)
    failed = {name for name, row in rows.items() if not row[0]} - {"kubectl"}
    assert failed == {
        "API server",
        "namespace",
        "Traefik and its CRDs",
        "default StorageClass",
        "memory for stage + prod",
        "disk under the volumes",
        "Secrets",
        "clock skew",
    }
    assert "sudo invoke k3s.install" in rows["API server"][2]
    assert rows["namespace"][2].startswith(
        "kubectl label namespace desbordante-stage --overwrite "
        "pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version"
    )
    assert rows["Traefik and its CRDs"][1] == "no traefik.io CRDs (Middleware)"
    assert rows["default StorageClass"][1] == "no default StorageClass (classes: local-path)"
    assert "is-default-class" in rows["default StorageClass"][2]
    assert rows["memory for stage + prod"][1].endswith("0.57 GiB short")
    assert rows["disk under the volumes"][1].startswith("DiskPressure on server")
    assert rows["Secrets"][1:] == (
        f"missing in desbordante-stage: {names.FlowerSecret.NAME}",
        "invoke secrets.generate --env stage",
    )
    assert rows["clock skew"][1] == "this machine is 42.0s ahead of the API server"


def test_disk_smaller_than_the_volumes_or_nearly_full(cfg: EnvConfig) -> None:
    apis = healthy_cluster(cfg)
    core: ClusterCore = apis.kube.core
    core.node_fs = {"server": {"capacityBytes": 6 * GI, "availableBytes": 5 * GI}}
    assert doctor(cfg, apis)["disk under the volumes"][0] is False  # 8 GiB requested
    core.node_fs = {"server": {"capacityBytes": 40 * GI, "availableBytes": 100 * MI}}
    assert doctor(cfg, apis)["disk under the volumes"][0] is False  # under MIN_FREE_DISK_MB
    core.node_fs = {}  # no nodes/proxy right: the node's capacity, free space unknown
    row = doctor(cfg, apis)["disk under the volumes"]
    assert row[0] is False and row[1].startswith("node disk 40.00 GiB, 0.00 GiB free")


def test_no_secret_value_reaches_the_report(cfg: EnvConfig) -> None:
    apis = healthy_cluster(cfg)
    core: ClusterCore = apis.kube.core
    values = [
        core.value(namespace, name, key)
        for (namespace, name), secret in core.secrets.items()
        for key in secret.data
    ]
    text = repr(doctor(cfg, apis))
    assert values and not any(value in text for value in values)


def test_the_task_checks_the_cluster_of_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no.kubeconfig"
    with pytest.raises(Exit) as raised:
        config_tasks.doctor(MockContext(), env="prod", set_=[f"KUBECONFIG_PATH={missing}"])
    assert "API server" in str(raised.value.message)
    out = capsys.readouterr().out
    assert "doctor --env prod (desbordante-prod)" in out and "No kubeconfig" in out
    assert "TLS mode (prod)" in out and "acme: Let's Encrypt" in out  # the edge rows too
