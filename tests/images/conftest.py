"""Fixtures of the image tests: a real Docker engine, base image, wheelhouse, image and registry.

The engine is made ready by project code (`engine.ensure_engine`: installs docker.io from
Debian and starts `dockerd --bridge=none --iptables=false` when root and none answers). Images
are built offline: on the local debootstrap Python 3.11 base, from the wheelhouse.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import docker
import pytest
from docker.errors import ImageNotFound
from invoke import Context

from desbordante_ops import baseimage, engine, images, registry, wheelhouse

TEST_IMAGE = "desbordante-test/backend"


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    if os.geteuid() != 0 and not engine.ping():
        pytest.skip("no Docker engine answers and starting one needs root")
    return engine.ensure_engine()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    baseimage.build(docker_client)
    return baseimage.LOCAL_BASE_IMAGE


@pytest.fixture(scope="session")
def wheels() -> None:
    wheelhouse.build()


@pytest.fixture(scope="session")
def built(
    docker_client: docker.DockerClient, base_image: str, wheels: None
) -> Iterator[images.BuildResult]:
    """The backend image, built by `images.build` exactly as the task does."""
    result = images.build(Context(), image=TEST_IMAGE, base_image=base_image)
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
