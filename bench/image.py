"""Image: size, cold build, rebuild after a code-only change (ratio), pull-back size.

The build context is a copy of the repository, so the code-only change (one comment line in
the backend package) never touches the working tree. Skipped when no engine can be started
or no base image is available offline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import docker
from invoke import Exit

from bench.report import Check, Result
from desbordante_ops import baseimage, engine, images, imagetags
from desbordante_ops.config import REPO_ROOT

TAG = "desbordante-bench/backend"
RATIO_TARGET = 0.2
CHANGED_FILE = Path("backend/src/desbordante_service/__init__.py")
CONTEXT = ("backend", "images", "wheelhouse", ".dockerignore")


def _skipped(reason: str) -> Result:
    return Result("image", [], [], skipped=reason)


def _base(client: docker.DockerClient) -> str | None:
    if baseimage.exists(client):
        return baseimage.LOCAL_BASE_IMAGE
    try:
        client.images.get("python:3.11-slim")
    except docker.errors.ImageNotFound:
        return None
    return "python:3.11-slim"


def _copy_context(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)


def _build(
    client: docker.DockerClient, root: Path, ref: str, args: dict, no_cache: bool
) -> tuple[float, list[str]]:
    """Seconds of the build and the instructions whose layer came from the cache."""
    started = time.perf_counter()
    result = images.build_image(client, [ref], args, no_cache=no_cache, root=root)
    return time.perf_counter() - started, result.cached


def _layer_ids(client: docker.DockerClient, ref: str) -> dict[str, int]:
    return {
        layer["Id"]: int(layer.get("Size", 0))
        for layer in client.api.history(ref)
        if layer.get("Id", "<missing>") != "<missing>"
    }


def run(runs: int) -> Result:
    try:
        client = engine.ensure_engine(install=False)
    except Exit as exc:
        return _skipped(f"no Docker engine could be started: {exc.message}")
    base = _base(client)
    if base is None:
        return _skipped("no base image offline; run `invoke images.base` first")
    args = images.build_args(imagetags.revision(REPO_ROOT), base)
    with tempfile.TemporaryDirectory(prefix="desbordante-bench-image-") as tmp:
        root = Path(tmp)
        _copy_context(root)
        cold, _ = _build(client, root, f"{TAG}:cold", args, no_cache=True)
        # The classic builder does not offer a --no-cache build's COPY layers as cache to the
        # next build; an unchanged rebuild seeds the cache as any previous build would.
        _build(client, root, f"{TAG}:cold", args, no_cache=False)
        with (root / CHANGED_FILE).open("a", encoding="utf-8") as handle:
            handle.write(f"# bench code-only change {time.time_ns()}\n")
        warm, cached = _build(client, root, f"{TAG}:code-change", args, no_cache=False)
    size = int(client.images.get(f"{TAG}:cold").attrs["Size"])
    cold_layers = _layer_ids(client, f"{TAG}:cold")
    new_layers = _layer_ids(client, f"{TAG}:code-change")
    pull_back = sum(size for layer, size in new_layers.items() if layer not in cold_layers)
    ratio = warm / cold
    data = {
        "base_image": base,
        "size_bytes": size,
        "cold_build_s": cold,
        "code_change_rebuild_s": warm,
        "ratio": ratio,
        "pull_back_bytes": pull_back,
        "rebuild_cached_steps": cached,
    }
    rows = [
        [
            f"{size / 1e6:.0f} MB",
            f"{cold:.0f} s",
            f"{warm:.1f} s",
            f"{ratio:.2f}",
            f"{pull_back / 1e3:.0f} kB",
        ]
    ]
    checks = [Check(f"rebuild / cold <= {RATIO_TARGET}", f"{ratio:.2f}", ratio <= RATIO_TARGET)]
    columns = ["size", "cold build", "rebuild (code change)", "ratio", "pull-back"]
    return Result("image", columns, rows, checks, data)
