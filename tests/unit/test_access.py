"""access.grant / access.revoke against in-memory RBAC and CoreV1Api fakes (no cluster)."""

from __future__ import annotations

import copy
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster import access, kube
from desbordante_ops.core.files import write_private

NS = "desbordante-stage"


class Store:
    """Objects by (kind, namespace, name) with 404 on missing ones."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Any] = {}
        self.tokens: list[tuple[str, Any]] = []

    def _get(self, kind: str, name: str, namespace: str) -> Any:
        try:
            return copy.deepcopy(self.objects[(kind, namespace, name)])
        except KeyError:
            raise ApiException(status=404, reason="NotFound") from None

    def _delete(self, kind: str, name: str, namespace: str) -> None:
        self._get(kind, name, namespace)
        del self.objects[(kind, namespace, name)]

    # core
    def read_namespaced_service_account(self, name: str, namespace: str) -> Any:
        return self._get("sa", name, namespace)

    def create_namespaced_service_account(self, namespace: str, body: Any) -> None:
        self.objects[("sa", namespace, body.metadata.name)] = body

    def patch_namespaced_service_account(self, name: str, namespace: str, body: Any) -> None:
        self._get("sa", name, namespace)
        self.objects[("sa", namespace, name)].metadata.labels = body["metadata"]["labels"]

    def delete_namespaced_service_account(self, name: str, namespace: str) -> None:
        self._delete("sa", name, namespace)

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: Any) -> Any:
        self._get("sa", name, namespace)
        self.tokens.append((name, body))
        return SimpleNamespace(
            status=SimpleNamespace(token=f"tok-{name}-SECRET", expiration_timestamp="2027-02-23")
        )

    # rbac
    def read_namespaced_role_binding(self, name: str, namespace: str) -> Any:
        return self._get("rb", name, namespace)

    def create_namespaced_role_binding(self, namespace: str, body: Any) -> None:
        self.objects[("rb", namespace, body.metadata.name)] = body

    def delete_namespaced_role_binding(self, name: str, namespace: str) -> None:
        self._delete("rb", name, namespace)


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[kube.Kube, Store]:
    store = Store()
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
    configuration = SimpleNamespace(host="https://server.example:6443", ssl_ca_cert=str(ca))
    k = kube.Kube(
        api_client=SimpleNamespace(configuration=configuration),
        core=store,
        apps=None,
        batch=None,
        rbac=store,
    )
    return k, store


@pytest.mark.parametrize(("role", "cluster_role"), [("viewer", "view"), ("devops", "admin")])
def test_grant_binds_role_and_writes_private_kubeconfig(
    cluster: tuple[kube.Kube, Store], tmp_path: Path, role: str, cluster_role: str
) -> None:
    k, store = cluster
    out = tmp_path / "jane-stage.kubeconfig"
    access.grant(k, NS, "jane", role, out, days=30)
    binding = store.objects[("rb", NS, "access-jane")]
    assert binding.role_ref.kind == "ClusterRole" and binding.role_ref.name == cluster_role
    assert binding.subjects[0].name == "access-jane" and binding.subjects[0].namespace == NS
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = yaml.safe_load(out.read_text())
    assert config["users"][0]["user"]["token"] == "tok-access-jane-SECRET"
    assert config["contexts"][0]["context"]["namespace"] == NS
    assert config["clusters"][0]["cluster"]["server"] == "https://server.example:6443"
    ((_, request),) = store.tokens
    assert request.spec.expiration_seconds == 30 * 86400


def test_changing_role_replaces_the_binding(
    cluster: tuple[kube.Kube, Store], tmp_path: Path
) -> None:
    k, store = cluster
    access.grant(k, NS, "jane", "viewer", tmp_path / "a")
    access.grant(k, NS, "jane", "devops", tmp_path / "a")
    assert store.objects[("rb", NS, "access-jane")].role_ref.name == "admin"
    sa = store.objects[("sa", NS, "access-jane")]
    assert sa.metadata.labels[access.ROLE_LABEL] == "devops"


def test_revoke_removes_binding_and_account(
    cluster: tuple[kube.Kube, Store], tmp_path: Path
) -> None:
    k, store = cluster
    access.grant(k, NS, "jane", "viewer", tmp_path / "a")
    prod = "desbordante-prod"
    assert access.revoke(k, "jane", [NS, prod]) == [NS]
    assert store.objects == {}
    assert access.revoke(k, "jane", [NS]) == []


@pytest.mark.parametrize("bad", ["Jane", "jane_doe", "-x", "a" * 60])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(Exit, match="lower-case"):
        access.account_name(bad)


def test_unknown_role_is_refused(cluster: tuple[kube.Kube, Store], tmp_path: Path) -> None:
    with pytest.raises(Exit, match="viewer, devops"):
        access.grant(cluster[0], NS, "jane", "root", tmp_path / "a")


def test_kubeconfig_shape_is_loadable_by_the_client(tmp_path: Path) -> None:
    config = access.kubeconfig_for("https://s:6443", "Y2E=", NS, "jane", "t", "desbordante-stage")
    path = tmp_path / "k"
    write_private(path, yaml.safe_dump(config))
    from kubernetes import config as k8s_config

    api_client = k8s_config.new_client_from_config(config_file=str(path))
    assert api_client.configuration.host == "https://s:6443"
    assert isinstance(api_client, k8s.ApiClient)
