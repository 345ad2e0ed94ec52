"""A stand-in for the docker-py client's image calls that images.load makes (get, save)."""

from __future__ import annotations

from typing import Any


class FakeImage:
    id = "sha256:" + "ab" * 32

    def __init__(self) -> None:
        self.named: list[Any] = []

    def save(self, named: Any = False) -> list[bytes]:
        self.named.append(named)
        return [b"tar-part-1", b"tar-part-2"]


class FakeDocker:
    """`client.images.get(ref)` always finds the one FakeImage."""

    def __init__(self) -> None:
        self.image = FakeImage()
        self.images = self

    def get(self, ref: str) -> FakeImage:
        return self.image
