"""Build and tag the backend image with docker-py (never the docker CLI).

The engine's build log is streamed through rich (one progress step per Dockerfile
instruction; a failure names the failing step and shows its last output lines). The image is
tagged `<image>:<short sha>` and, at a release, `<image>:vX.Y.Z` (`-dirty` on a dirty tree).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException
from invoke import Context, Exit
from rich.markup import escape

from desbordante_ops.core.console import console, print_table, progress, step, warn
from desbordante_ops.core.settings import REPO_ROOT, EnvConfig
from desbordante_ops.image import engine, tags, wheelhouse
from desbordante_ops.image.refs import image_refs, split_ref

DOCKERFILE = "images/backend/Dockerfile"
STEP_LINE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL_LINES = 25


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    size: int
    refs: list[str]
    cached: list[str]  # instructions whose layer came from the build cache


def one_line(text: str, width: int = 110) -> str:
    """TEXT with runs of whitespace collapsed, cut to WIDTH characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def build_args(rev: tags.Revision, base_image: str | None) -> dict[str, str]:
    """Build arguments: OCI label values and, when given, the base image."""
    args = tags.labels(rev, source=os.environ.get("IMAGE_SOURCE", tags.DEFAULT_SOURCE))
    if base_image:
        args["BASE_IMAGE"] = base_image
    return args


def follow_build(stream: Iterable[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """Show a legacy-builder JSON stream; return (image id, cached instructions).

    A build error raises Exit naming the failing step, after its last output lines.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    current, instruction, image_id = "(before the first step)", "", ""
    cached: list[str] = []
    with progress() as bar:
        task_id = bar.add_task("build", total=None)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "")
                bar.stop()
                for line in tail:
                    console.print(f"  [dim]{escape(line)}[/]", emoji=False)
                hint = (
                    " (the base image cannot be pulled here? pass --base-image with a local one)"
                    if instruction.startswith("FROM")
                    else ""
                )
                raise Exit(f"Image build failed at {current}: {message.strip()}{hint}")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            for line in str(chunk.get("stream", "")).splitlines():
                match = STEP_LINE.match(line.strip())
                if match:
                    number, total, instruction = match.groups()
                    current = f"step {number}/{total} `{one_line(instruction, 80)}`"
                    bar.update(
                        task_id,
                        completed=int(number) - 1,
                        total=int(total),
                        description=escape(f"step {number}/{total}: {one_line(instruction)[:50]}"),
                    )
                    console.print(
                        f"[cyan]step {number}/{total}[/] {escape(one_line(instruction))}",
                        emoji=False,
                    )
                elif line.strip() == "---> Using cache":
                    cached.append(instruction)
                elif line.strip():
                    tail.append(line.rstrip())
        bar.update(task_id, completed=bar.tasks[0].total or 1)
    if not image_id:
        raise Exit(f"The build stream ended without an image id after {current}.")
    return image_id, cached


def build_image(
    client: docker.DockerClient,
    refs: list[str],
    buildargs: Mapping[str, str],
    no_cache: bool = False,
    network: str | None = None,
    root: Path = REPO_ROOT,
) -> BuildResult:
    """Build DOCKERFILE in ROOT, tag it with every ref in REFS and return what was built."""
    try:
        stream = client.api.build(
            path=str(root),
            dockerfile=DOCKERFILE,
            tag=refs[0],
            buildargs=dict(buildargs),
            nocache=no_cache,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode=network or None,
            decode=True,
        )
        image_id, cached = follow_build(stream)
        image = client.images.get(image_id)
        for ref in refs[1:]:
            repository, tag = split_ref(ref)
            image.tag(repository, tag)
    except APIError as error:
        raise Exit(f"The Docker engine refused the build: {error.explanation or error}") from None
    except DockerException as error:
        raise Exit(f"Docker engine error during the build: {error}") from None
    image.reload()
    return BuildResult(str(image.id), int(image.attrs["Size"]), refs, cached)


def build_backend(
    c: Context,
    cfg: EnvConfig,
    extra_tags: Iterable[str] = (),
    base_image: str | None = None,
    no_cache: bool = False,
    image: str | None = None,
) -> BuildResult:
    """Build and tag the backend image for the current git revision."""
    image = image or cfg.toolkit.IMAGE_NAME
    rev = tags.revision(c, cfg.root)
    client = engine.connect()
    if wheelhouse.directory(cfg.root).is_dir():
        if not wheelhouse.is_current(cfg.root):
            warn("wheelhouse/ is stale for backend/requirements.lock; run invoke images.wheelhouse")
        step("Offline build: installing from wheelhouse/ with --no-index")
    refs = image_refs(image, [*rev.tags, *extra_tags])
    if rev.dirty:
        warn("The working tree is dirty: tags end in -dirty and are never pushable to prod")
    step(f"Building {refs[0]} on {base_image or 'the Dockerfile default base (python:3.11-slim)'}")
    result = build_image(
        client,
        refs,
        build_args(rev, base_image),
        no_cache=no_cache,
        network=cfg.toolkit.IMAGE_BUILD_NETWORK,
        root=cfg.root,
    )
    print_table(
        "Image",
        ("image id", "size", "tags"),
        [
            (
                result.image_id.removeprefix("sha256:")[:12],
                f"{result.size / 1e6:.1f} MB",
                "\n".join(result.refs),
            )
        ],
    )
    return result
