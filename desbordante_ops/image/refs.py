"""Image references: split with docker-py's own parser, moved between registries."""

from __future__ import annotations

import re
from collections.abc import Iterable

from docker.utils import parse_repository_tag

# `repo@sha256:...`: an image pinned to its digest.
DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


def split_ref(ref: str) -> tuple[str, str | None]:
    """`repo[:tag]` → (repo, tag); a port in the registry host is not taken for a tag."""
    return parse_repository_tag(ref)


def repository_path(image: str) -> str:
    """IMAGE without its registry host: `ghcr.io/o/n` → `o/n`, `o/n` → `o/n`."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return image


def in_registry(image: str, registry: str | None) -> str:
    """The repository of IMAGE in REGISTRY (unchanged when REGISTRY is empty)."""
    return f"{registry.rstrip('/')}/{repository_path(image)}" if registry else image


def image_refs(image: str, tags: Iterable[str]) -> list[str]:
    """Full references: a tag with ':' or '/' is already one, else it is a tag of IMAGE."""
    return [tag if (":" in tag or "/" in tag) else f"{image}:{tag}" for tag in tags]
