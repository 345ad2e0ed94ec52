"""Fixtures of the image tests: a real Docker engine, base image, wheelhouse, image and registry.

The engine, the debootstrap base and the registry are what these CI machines need (tests/support):
no engine runs and nothing can be pulled. The image itself is built by the toolkit's own
`images.build` code, offline: on the local base, from the wheelhouse, on the host network.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import docker
import pytest
from docker.errors import ImageNotFound
from invoke import Context
from support import baseimage, dockerd, registry

from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.image import build as images
from desbordante_ops.image import wheelhouse

TEST_IMAGE = "desbordante-test/backend"
NETWORK = dockerd.NETWORK  # the CI engine runs without a bridge


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        return dockerd.ensure_engine()
    except dockerd.Unavailable as reason:
        pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    baseimage.build(docker_client)
    return baseimage.LOCAL_BASE_IMAGE


@pytest.fixture(scope="session")
def wheels() -> None:
    wheelhouse.build_wheelhouse(Context())


@pytest.fixture(scope="session")
def image_cfg() -> EnvConfig:
    """The local settings the image tests build with (host network, the test repository)."""
    return load_config("local", {"IMAGE_BUILD_NETWORK": NETWORK, "IMAGE_NAME": TEST_IMAGE})


@pytest.fixture(scope="session")
def built(
    docker_client: docker.DockerClient, base_image: str, wheels: None, image_cfg: EnvConfig
) -> Iterator[images.BuildResult]:
    """The backend image, built by `images.build` exactly as the task does."""
    result = images.build_backend(Context(), image_cfg, base_image=base_image)
    yield result
    for ref in result.refs:
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(ref, noprune=False)


@pytest.fixture(scope="session")
def test_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.Registry]:
    """Debian's docker-registry on a free 127.0.0.1 port with one bcrypt htpasswd user."""
    workdir = tmp_path_factory.mktemp("registry")
    with registry.running(workdir, "ci", secrets.token_urlsafe(24)) as running:
        yield running
