"""Render both overlays once per session (real `kubectl kustomize`, no cluster needed)."""

from __future__ import annotations

import shutil

import pytest
from support.fakeapi.fixtures import (  # noqa: F401 - pytest fixtures
    admin,
    admin_kubeconfig,
    fake_api,
    fake_api_tls,
)

from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.settings import CLUSTER_ENVS

from .kube_objects import render_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("kubectl") is None:
        skip = pytest.mark.skip(reason="kubectl (with kustomize v5) is not installed")
        for item in items:
            if "tests/manifests" in str(item.path):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def all_rendered() -> dict[str, Rendered]:
    return {env: render_env(env) for env in CLUSTER_ENVS}


@pytest.fixture(params=CLUSTER_ENVS)
def rendered(request: pytest.FixtureRequest, all_rendered: dict[str, Rendered]) -> Rendered:
    return all_rendered[request.param]
