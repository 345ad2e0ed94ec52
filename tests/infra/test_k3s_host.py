"""A bootstrapped server: k3s, API, kubeconfig, encryption, nodes, pods, volumes, ingress."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.cluster


def test_k3s_service_is_enabled_and_running(host: Any) -> None:
    service = host.service("k3s")
    assert service.is_enabled
    assert service.is_running


def test_api_server_listens_on_6443(host: Any) -> None:
    assert host.socket("tcp://6443").is_listening


def test_kubeconfigs_are_private(host: Any, request: pytest.FixtureRequest) -> None:
    for path in ("/etc/rancher/k3s/k3s.yaml", request.config.getoption("--infra-kubeconfig")):
        kubeconfig = host.file(path)
        assert kubeconfig.exists, path
        assert kubeconfig.mode == 0o600, f"{path} mode {oct(kubeconfig.mode)}"


def test_secrets_encryption_is_enabled(host: Any) -> None:
    assert host.file("/etc/rancher/k3s/config.yaml").contains("secrets-encryption: true")
    status = host.check_output("k3s secrets-encrypt status")
    assert "Encryption Status: Enabled" in status


def test_every_node_is_ready(kubectl_json: Any) -> None:
    nodes = kubectl_json("get nodes")["items"]
    assert nodes
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_pods_of_the_stack_run_and_are_ready(kubectl_json: Any, namespace: str) -> None:
    pods = kubectl_json(f"-n {namespace} get pods")["items"]
    assert pods, f"no pods in {namespace}"
    for pod in pods:
        phase = pod["status"]["phase"]
        if phase == "Succeeded":  # finished migrate job pods
            continue
        statuses = pod["status"].get("containerStatuses", [])
        assert phase == "Running", f"{pod['metadata']['name']}: {phase}"
        assert all(s["ready"] for s in statuses), pod["metadata"]["name"]


def test_volume_claims_are_bound(kubectl_json: Any, namespace: str) -> None:
    claims = kubectl_json(f"-n {namespace} get pvc")["items"]
    assert claims, f"no PersistentVolumeClaims in {namespace}"
    for claim in claims:
        assert claim["status"]["phase"] == "Bound", claim["metadata"]["name"]


def test_ingress_answers_for_the_api_host(host: Any, cfg: Any) -> None:
    api_host = cfg.value("API_HOST")
    code = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {api_host}' "
        "--max-time 10 http://127.0.0.1/health/ready"
    )
    assert code == "200"


def test_flower_behind_basic_auth(host: Any, cfg: Any) -> None:
    flower_host = cfg.value("FLOWER_INGRESS_HOST")
    code = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {flower_host}' "
        "--max-time 10 http://127.0.0.1/"
    )
    assert code == "401"
