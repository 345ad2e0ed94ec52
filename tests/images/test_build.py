"""Build behaviour: dependency-layer reuse on a code-only change, and a failing step reported."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path

import docker
import pytest
from invoke import Exit

from desbordante_ops.core.settings import REPO_ROOT
from desbordante_ops.image import build as images

from .conftest import NETWORK

DEPS_STEP = "--requirement /build/requirements.lock"
APP_STEP = "--target /opt/app"


def copy_context(target: Path) -> Path:
    """What the build context holds (backend, images/backend, wheelhouse, .dockerignore)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO_ROOT / "backend", target / "backend", ignore=ignore)
    shutil.copytree(REPO_ROOT / "images" / "backend", target / "images" / "backend")
    shutil.copytree(REPO_ROOT / "wheelhouse", target / "wheelhouse")
    shutil.copy2(REPO_ROOT / ".dockerignore", target / ".dockerignore")
    return target


def test_code_only_change_reuses_the_dependency_layer(
    docker_client: docker.DockerClient, base_image: str, built, tmp_path: Path
) -> None:
    root = copy_context(tmp_path / "context")
    args = {"BASE_IMAGE": base_image, "REVISION": "test"}
    refs = ["desbordante-test/cache:first", "desbordante-test/cache:second"]
    try:
        first = images.build_image(docker_client, refs[:1], args, network=NETWORK, root=root)
        module = root / "backend" / "src" / "desbordante_service" / "__init__.py"
        module.write_text(module.read_text() + f"\n# code-only change {uuid.uuid4()}\n")
        second = images.build_image(docker_client, refs[1:], args, network=NETWORK, root=root)
        first_layers = docker_client.api.inspect_image(first.image_id)["RootFS"]["Layers"]
        second_layers = docker_client.api.inspect_image(second.image_id)["RootFS"]["Layers"]
    finally:
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(ref, force=True)
    assert any(DEPS_STEP in step for step in second.cached), second.cached
    assert not any(APP_STEP in step for step in second.cached), second.cached
    # Same base, user, venv layers; only the small app layer differs.
    assert len(first_layers) == len(second_layers)
    changed = [
        i for i, (a, b) in enumerate(zip(first_layers, second_layers, strict=True)) if a != b
    ]
    assert len(changed) == 1


def test_failing_build_names_the_failing_step(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path, capsys
) -> None:
    dockerfile = tmp_path / images.DOCKERFILE
    dockerfile.parent.mkdir(parents=True)
    dockerfile.write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing\nRUN echo about to fail && exit 3\n"
    )
    with pytest.raises(Exit) as raised:
        images.build_image(
            docker_client,
            ["desbordante-test/broken:x"],
            {"BASE_IMAGE": base_image},
            network=NETWORK,
            root=tmp_path,
        )
    message = str(raised.value.message)
    assert "step 4/4" in message and "RUN echo about to fail && exit 3" in message
    assert "non-zero code: 3" in message
    assert "about to fail" in capsys.readouterr().out  # the step's own output is shown
