"""The `verify` role inside the built image: refuses a missing URL, passes against the containers.

The stack is `invoke up --docker`'s (migrate, api, worker, flower as containers of the built
image, host network); the verify container is one more of the same image on the host network,
as the post-deploy Job runs it next to the api Service.
"""

from __future__ import annotations

import re

import docker
from invoke import Context

from desbordante_ops.core.settings import load_config
from desbordante_ops.image import build as images
from desbordante_ops.local.containers import ContainerStack

from .test_image import run

UP_TIMEOUT_SECONDS = 120
VERIFY_TIMEOUT_SECONDS = 90
ID = r"[0-9a-f-]{36}"


def test_verify_without_its_url_exits_2_naming_the_variable(
    docker_client: docker.DockerClient, built: images.BuildResult
) -> None:
    code, out = run(docker_client, built.image_id, ["verify"])

    assert code == 2, out
    assert out.strip() == (
        "configuration error: VERIFY_API_URL: required environment variable is not set"
    )


def test_verify_passes_in_a_container_against_the_containers_api(
    docker_client: docker.DockerClient, built: images.BuildResult
) -> None:
    cfg = load_config("local")
    stack = ContainerStack(Context(), cfg, image=built.refs[0])
    stack.up(timeout=UP_TIMEOUT_SECONDS)
    try:
        container = docker_client.containers.run(
            built.image_id,
            ["verify"],
            detach=True,
            network_mode="host",
            environment={
                "VERIFY_API_URL": cfg.toolkit.API_BASE_URL,
                "VERIFY_TIMEOUT_SECONDS": str(VERIFY_TIMEOUT_SECONDS),
            },
        )
        try:
            code = container.wait(timeout=VERIFY_TIMEOUT_SECONDS + 60)["StatusCode"]
            stdout = container.logs(stdout=True, stderr=False).decode()
            stderr = container.logs(stdout=False, stderr=True).decode()
        finally:
            container.remove(force=True)
    finally:
        stack.down(timeout=30)

    assert code == 0, stdout + stderr
    lines = stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == "verify: ready ok"
    assert re.fullmatch(rf"verify: upload ok \(dataset {ID}\)", lines[1]), lines
    assert lines[2:] == ["verify: task ok (5 FDs, as expected)", "verify: delete ok"]
    assert stderr == ""
