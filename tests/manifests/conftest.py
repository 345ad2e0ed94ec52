"""Render both overlays once per session (real `kubectl kustomize`, no cluster needed)."""

from __future__ import annotations

import shutil

import pytest

from desbordante_ops import k8s_names as names
from desbordante_ops.render import Rendered, render

from .kube_objects import TEST_TAG


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("kubectl") is None:
        skip = pytest.mark.skip(reason="kubectl (with kustomize v5) is not installed")
        for item in items:
            if "tests/manifests" in str(item.path):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def all_rendered() -> dict[str, Rendered]:
    return {env: render(env, TEST_TAG) for env in names.KUBE_ENVS}


@pytest.fixture(params=names.KUBE_ENVS)
def rendered(request: pytest.FixtureRequest, all_rendered: dict[str, Rendered]) -> Rendered:
    return all_rendered[request.param]
