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
from invoke import Context, Exit

from bench.report import Check, Result
from desbordante_ops.core.settings import REPO_ROOT, load_config
from desbordante_ops.image import build as images
from desbordante_ops.image import engine
from desbordante_ops.image import tags as imagetags

TAG = "desbordante-bench/backend"
RATIO_TARGET = 0.2
CHANGED_FILE = Path("backend/src/desbordante_service/__init__.py")
CONTEXT = ("backend", "images", "wheelhouse", ".dockerignore")


def _skipped(reason: str) -> Result:
    return Result("image", [], [], skipped=reason)


# Base images tried in order: the one the image tests build offline, then the default.
BASES = ("desbordante-local/python:3.11-bookworm", "python:3.11-slim")


def _base(client: docker.DockerClient) -> str | None:
    for base in BASES:
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            continue
        return base
    return None


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
    network = load_config("local").toolkit.IMAGE_BUILD_NETWORK
    result = images.build_image(client, [ref], args, no_cache=no_cache, network=network, root=root)
    return time.perf_counter() - started, result.cached


def _layer_ids(client: docker.DockerClient, ref: str) -> dict[str, int]:
    return {
        layer["Id"]: int(layer.get("Size", 0))
        for layer in client.api.history(ref)
        if layer.get("Id", "<missing>") != "<missing>"
    }


def run(runs: int) -> Result:
    try:
        client = engine.connect()
    except Exit as reason:
        return _skipped(str(reason.message))
    base = _base(client)
    if base is None:
        return _skipped(f"none of {', '.join(BASES)} is in the engine (`nox -s images` builds one)")
    args = images.build_args(imagetags.revision(Context(), REPO_ROOT), base)
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
