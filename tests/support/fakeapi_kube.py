"""The toolkit's own connections to the fake API server (tests/support/fakeapi.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from desbordante_ops.cluster import access, kube
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig, load_config
from support.fakeapi import FakeApiServer


def config_for(path: Path, env: str = "stage") -> EnvConfig:
    """ENV's settings with the kubeconfig at PATH (nothing from the process environment)."""
    return load_config(env, flags={"KUBECONFIG_PATH": str(path)}, environ={})


def connect(path: Path, env: str = "stage") -> kube.Kube:
    """`kube.connect` of the toolkit for the kubeconfig at PATH."""
    return kube.connect(config_for(path, env))


def grant(
    admin: kube.Kube, directory: Path, role: str, user: str = "jane", env: str = "stage"
) -> Path:
    """`access.grant` of ROLE in ENV to USER; returns the kubeconfig it wrote."""
    out = directory / f"{user}-{env}-{role}.kubeconfig"
    access.grant(admin, f"desbordante-{env}", user, role, out, days=30)
    return out


@pytest.fixture
def admin_kubeconfig(fake_api: FakeApiServer, tmp_path: Path) -> Path:
    return fake_api.kubeconfig_admin(tmp_path / "admin.kubeconfig")


@pytest.fixture
def admin(admin_kubeconfig: Path) -> kube.Kube:
    """The cluster admin's connection; both environments' namespaces exist."""
    k = connect(admin_kubeconfig)
    for env in CLUSTER_ENVS:
        kube.ensure_namespace(k.core, f"desbordante-{env}", {})
    return k
