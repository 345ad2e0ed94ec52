"""What an image is made of: user, entry point, labels, health check, size, layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker


def describe(client: docker.DockerClient, ref: str) -> dict[str, Any]:
    """User, entry point, labels, health check and size of REF."""
    attrs = client.images.get(ref).attrs
    config = attrs["Config"]
    return {
        "user": config.get("User", ""),
        "entrypoint": config.get("Entrypoint") or [],
        "cmd": config.get("Cmd") or [],
        "labels": config.get("Labels") or {},
        "healthcheck": (config.get("Healthcheck") or {}).get("Test", []),
        "env": dict(item.split("=", 1) for item in config.get("Env") or []),
        "size": int(attrs["Size"]),
    }


def layers(client: docker.DockerClient, ref: str) -> Iterator[tuple[str, int]]:
    """(instruction, size) of each layer of REF, newest first."""
    for layer in client.api.history(ref):
        yield str(layer.get("CreatedBy", ""))[:90], int(layer.get("Size", 0))
