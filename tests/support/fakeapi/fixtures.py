"""pytest fixtures of the fake API server (import them in a conftest to use them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fakeapi.connect import connect_with
from support.fakeapi.k3s import Cluster, cluster, seed_k3s
from support.fakeapi.kubelet import Kubelet
from support.fakeapi.server import FakeApiServer
from support.fakeapi.tls import Tls, make_tls

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import ensure_namespace
from desbordante_ops.core.settings import CLUSTER_ENVS


@pytest.fixture(scope="session")
def fake_api_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("fakeapi-tls"))


@pytest.fixture
def fake_api(fake_api_tls: Tls) -> Iterator[FakeApiServer]:
    """The fake API server on loopback HTTPS, set up like a fresh k3s, controllers simulated."""
    with FakeApiServer(fake_api_tls) as server:
        seed_k3s(server)
        Kubelet(server)
        yield server


@pytest.fixture
def admin_kubeconfig(fake_api: FakeApiServer, tmp_path: Path) -> Path:
    return fake_api.kubeconfig_admin(tmp_path / "admin.kubeconfig")


@pytest.fixture
def admin(admin_kubeconfig: Path) -> Kube:
    """The cluster admin's connection over HTTPS; both environments' namespaces exist."""
    k = connect_with(admin_kubeconfig)
    for env in CLUSTER_ENVS:
        ensure_namespace(k.core, f"desbordante-{env}", dict(names.NAMESPACE_LABELS))
    return k


@pytest.fixture
def k3s() -> Cluster:
    """A fresh k3s-like fake cluster, in process (no socket)."""
    return cluster()
