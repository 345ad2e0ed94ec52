"""Push to a real registry on 127.0.0.1, remove the image, pull it back, run e2e on it.

The e2e suite (tests/e2e) runs in a subprocess with `--target docker`: `invoke up --docker`
brings up migrate, api, worker and flower as containers of the pulled image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest
from docker.errors import ImageNotFound
from invoke import Context, Exit
from support import registry

from desbordante_ops.core.settings import REPO_ROOT, EnvConfig, load_config
from desbordante_ops.image import build as images
from desbordante_ops.image import push as image_push
from desbordante_ops.image.refs import split_ref
from desbordante_ops.local.containers import ROLES, ContainerStack
from desbordante_ops.local.supervise import SERVICES

from .conftest import TEST_IMAGE

HEALTH_TIMEOUT_SECONDS = 120


def auth(reg: registry.Registry) -> dict[str, str]:
    return {"username": reg.username, "password": reg.password}


@pytest.fixture(scope="module")
def pushed(
    built: images.BuildResult, test_registry: registry.Registry, image_cfg: EnvConfig
) -> dict[str, str]:
    """Every tag of the built image pushed with `images.push`: remote ref → digest."""
    tags = [split_ref(ref)[1] or "" for ref in built.refs]
    return image_push.push_image(
        Context(),
        image_cfg,
        registry=test_registry.address,
        push_tags=tags,
        auth=auth(test_registry),
    )


@pytest.fixture(scope="module")
def pulled(
    docker_client: docker.DockerClient,
    built: images.BuildResult,
    pushed: dict[str, str],
    test_registry: registry.Registry,
) -> Iterator[str]:
    """The pushed image removed locally, then pulled back from the registry."""
    ref = next(iter(pushed))
    docker_client.images.remove(built.image_id, force=True)
    with pytest.raises(ImageNotFound):
        docker_client.images.get(built.image_id)
    repository, tag = split_ref(ref)
    image = docker_client.images.pull(repository, tag=tag, auth_config=auth(test_registry))
    assert image.id == built.image_id  # content-addressed: the very same image came back
    for local in built.refs:  # later tests may still use the local tags
        image.tag(*split_ref(local))
    yield ref


def test_push_sends_every_tag_and_reports_digests(pushed, test_registry, capsys) -> None:
    assert len(pushed) >= 1
    for ref, digest in pushed.items():
        assert ref.startswith(f"{test_registry.address}/{TEST_IMAGE}:")
        assert digest.startswith("sha256:")
    captured = capsys.readouterr()
    assert test_registry.password not in captured.out + captured.err


def test_push_with_wrong_password_fails_with_the_registry_message(
    built, test_registry, image_cfg, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("REGISTRY_USERNAME", test_registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", "not-the-password")
    tag = split_ref(built.refs[-1])[1] or ""
    with pytest.raises(Exit) as raised:
        image_push.push_image(Context(), image_cfg, registry=test_registry.address, push_tags=[tag])
    message = str(raised.value.message)
    assert "Push of" in message and "failed" in message
    assert "unauthorized" in message.lower() or "authentication required" in message.lower()
    assert "not-the-password" not in capsys.readouterr().out


def test_push_to_prod_refuses_a_sha_tag(built, test_registry) -> None:
    sha_tag = split_ref(built.refs[-1])[1] or ""
    with pytest.raises(Exit, match="only clean"):
        image_push.push_image(
            Context(),
            load_config("prod"),
            registry=test_registry.address,
            push_tags=[sha_tag],
            image=TEST_IMAGE,
            auth=auth(test_registry),
        )


def test_e2e_suite_passes_against_containers_of_the_pulled_image(pulled: str) -> None:
    env = {**os.environ, "IMAGE_NAME": pulled}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/e2e",
            "--target",
            "docker",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, output[-3000:]
    assert " passed" in output


def test_docker_healthcheck_turns_healthy_for_every_role(
    docker_client: docker.DockerClient, pulled: str
) -> None:
    stack = ContainerStack(Context(), load_config("local"), image=pulled)
    stack.up(timeout=120)
    try:
        states: dict[str, str] = {}
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for role in SERVICES:
                found = stack.find(role)
                assert found is not None
                states[role] = found.attrs["State"].get("Health", {}).get("Status", "none")
            if all(state == "healthy" for state in states.values()):
                break
            assert "unhealthy" not in states.values(), states
            time.sleep(1)
        assert all(state == "healthy" for state in states.values()), states
    finally:
        stack.down(timeout=30)
    for role in ROLES:
        assert stack.find(role) is None
