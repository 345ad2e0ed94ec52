"""Build, tag and push the backend image with docker-py (never the docker CLI).

`images.build` streams the engine's build log through rich (one progress step per Dockerfile
instruction; a failure names the failing step and shows its last output lines), tags the image
`<image>:<short sha>` and, at a release, `<image>:vX.Y.Z` (`-dirty` appended on a dirty tree).
`images.push` pushes those tags with per-layer progress and fails on errors that the engine
reports inside the push stream (docker-py does not raise on them).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from invoke import Context, Exit, task
from rich.markup import escape

from desbordante_ops import baseimage, engine, imagetags, wheelhouse
from desbordante_ops.config import REPO_ROOT, load_config
from desbordante_ops.console import console, ok, print_table, progress, step, warn

DOCKERFILE = "images/backend/Dockerfile"
STEP_LINE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL_LINES = 25
# Credentials for `images.push`, read from the environment (else the Docker config is used).
USER_VAR, PASSWORD_VAR = "REGISTRY_USERNAME", "REGISTRY_PASSWORD"


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    size: int
    refs: list[str]
    cached: list[str]  # instructions whose layer came from the build cache


# --- references -----------------------------------------------------------------------------


def split_ref(ref: str) -> tuple[str, str | None]:
    """`repo[:tag]` → (repo, tag); a port in the registry host is not taken for a tag."""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, None


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


def one_line(text: str, width: int = 110) -> str:
    """TEXT with runs of whitespace collapsed, cut to WIDTH characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- build ----------------------------------------------------------------------------------


def build_args(rev: imagetags.Revision, base_image: str | None) -> dict[str, str]:
    """Build arguments: OCI label values and, when given, the base image."""
    args = imagetags.labels(rev, source=os.environ.get("IMAGE_SOURCE", imagetags.DEFAULT_SOURCE))
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
                    " (no registry to pull the base from? use --local-base)"
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
            network_mode="host",
            decode=True,
        )
        image_id, cached = follow_build(stream)
        image = client.images.get(image_id)
        for ref in refs[1:]:
            repository, tag = split_ref(ref)
            image.tag(repository, tag)
    except APIError as error:
        raise Exit(f"The Docker engine refused the build: {error.explanation or error}") from None
    image.reload()
    return BuildResult(image.id, int(image.attrs["Size"]), refs, cached)


def build(
    c: Context,
    image: str | None = None,
    tags: Iterable[str] = (),
    base_image: str | None = None,
    local_base: bool = False,
    no_cache: bool = False,
    root: Path = REPO_ROOT,
) -> BuildResult:
    """Build and tag the backend image for the current git revision."""
    image = image or load_config("local", root=root)["IMAGE_NAME"]
    rev = imagetags.revision(root)
    client = engine.ensure_engine()
    if local_base:
        base_image = base_image or baseimage.LOCAL_BASE_IMAGE
        baseimage.build(client, base_image)
    if (root / "wheelhouse").is_dir():
        if not wheelhouse.is_current(root):
            warn("wheelhouse/ is stale for backend/pyproject.toml; run invoke images.wheelhouse")
        step("Offline build: installing from wheelhouse/ with --no-index")
    refs = image_refs(image, [*rev.tags, *tags])
    if rev.dirty:
        warn("The working tree is dirty: tags end in -dirty and are never pushable to prod")
    step(f"Building {refs[0]} on {base_image or 'the Dockerfile default base (python:3.11-slim)'}")
    result = build_image(client, refs, build_args(rev, base_image), no_cache=no_cache, root=root)
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


# --- push -----------------------------------------------------------------------------------


def auth_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """Registry credentials from REGISTRY_USERNAME and REGISTRY_PASSWORD (or ..._FILE)."""
    user = environ.get(USER_VAR)
    password = environ.get(PASSWORD_VAR)
    password_file = environ.get(f"{PASSWORD_VAR}_FILE")
    if password is None and password_file:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    if not user and not password:
        return None
    if not user or not password:
        raise Exit(
            f"Set both {USER_VAR} and {PASSWORD_VAR} (or neither, to use the Docker config)."
        )
    return {"username": user, "password": password}


def follow_push(stream: Iterable[Mapping[str, Any]], ref: str) -> str:
    """Show a push stream with one progress bar per layer; return the digest, or raise Exit."""
    digest = ""
    with progress() as bar:
        layers: dict[str, Any] = {}
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "")
                raise Exit(f"Push of {ref} failed: {message.strip()}")
            layer, status = chunk.get("id"), chunk.get("status", "")
            detail = chunk.get("progressDetail") or {}
            if layer and len(layer) == 12:
                if layer not in layers:
                    layers[layer] = bar.add_task(f"{layer} {status}", total=None)
                total = detail.get("total")
                done = status in ("Pushed", "Layer already exists", "Mounted from")
                bar.update(
                    layers[layer],
                    description=f"{layer} {status}",
                    total=total if total else (1 if done else None),
                    completed=detail.get("current", 0) if not done else (total or 1),
                )
            if "aux" in chunk and chunk["aux"].get("Digest"):
                digest = chunk["aux"]["Digest"]
    if not digest:
        raise Exit(f"Push of {ref} ended without a digest from the registry.")
    return digest


def push_ref(client: docker.DockerClient, ref: str, auth: dict[str, str] | None) -> str:
    """Push one reference; return its digest."""
    repository, tag = split_ref(ref)
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
        return follow_push(stream, ref)
    except APIError as error:
        raise Exit(f"Push of {ref} failed: {error.explanation or error}") from None


def check_pushable(refs: Iterable[str], env: str) -> None:
    """Prod only ever receives clean semver tags."""
    if env != "prod":
        return
    refused = [ref for ref in refs if not imagetags.is_prod_pushable(split_ref(ref)[1] or "")]
    if refused:
        raise Exit(
            f"Refusing to push {refused[0]} for prod: only clean vX.Y.Z tags go to prod "
            "(tag a release on a clean tree)."
        )


def push(
    c: Context,
    env: str = "local",
    registry: str | None = None,
    tags: Iterable[str] = (),
    image: str | None = None,
    root: Path = REPO_ROOT,
    auth: dict[str, str] | None = None,
) -> dict[str, str]:
    """Push the image's tags for the current revision (or TAGS) to REGISTRY; ref → digest.

    Credentials: AUTH, else REGISTRY_USERNAME/REGISTRY_PASSWORD, else the Docker config.
    """
    cfg = load_config(env, root=root)
    image = image or cfg["IMAGE_NAME"]
    registry = registry if registry is not None else cfg.get("IMAGE_REGISTRY")
    tags = list(tags) or imagetags.revision(root).tags
    if env == "prod":
        tags = [tag for tag in tags if imagetags.is_prod_pushable(tag)] or tags
    local_refs = image_refs(image, tags)
    remote_refs = [
        in_registry(repository, registry) + f":{tag}"
        for repository, tag in map(split_ref, local_refs)
    ]
    check_pushable(remote_refs, env)
    client = engine.ensure_engine()
    auth = auth or auth_from_environment()
    digests: dict[str, str] = {}
    for local, remote in zip(local_refs, remote_refs, strict=True):
        try:
            source = client.images.get(local)
        except ImageNotFound:
            raise Exit(f"No local image {local}; run invoke images.build first.") from None
        if remote != local:
            source.tag(*split_ref(remote))
        step(f"Pushing {remote}")
        digests[remote] = push_ref(client, remote, auth)
        ok(f"Pushed {remote} ({digests[remote]})")
    return digests


# --- inspection helpers used by the tests and `images.inspect` ------------------------------


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


def iter_layers_sizes(client: docker.DockerClient, ref: str) -> Iterator[tuple[str, int]]:
    """(instruction, size) of each layer of REF, newest first."""
    for layer in client.api.history(ref):
        yield str(layer.get("CreatedBy", ""))[:90], int(layer.get("Size", 0))


# --- tasks ----------------------------------------------------------------------------------


def _docker_error(error: DockerException) -> Exit:
    return Exit(f"Docker engine error: {error}")


@task(
    help={
        "tag": "extra tag or full reference (repeatable), besides <sha> and vX.Y.Z",
        "base_image": "base image (default: the Dockerfile's python:3.11-slim)",
        "local_base": "build on the local debootstrap Python 3.11 base (built once, offline)",
        "no_cache": "build every layer anew",
        "image": "image repository (default: IMAGE_NAME of env/local.env)",
    },
    iterable=["tag"],
    name="build",
)
def build_task(c, tag=None, base_image=None, local_base=False, no_cache=False, image=None):
    """Build the backend image (tags <sha>[, vX.Y.Z]; -dirty on a dirty tree)."""
    try:
        build(
            c,
            image=image,
            tags=tag or (),
            base_image=base_image,
            local_base=local_base,
            no_cache=no_cache,
        )
    except DockerException as error:
        raise _docker_error(error) from None


@task(
    help={
        "registry": "registry host[:port] (default: IMAGE_REGISTRY of the environment)",
        "tag": "tag to push (repeatable; default: the tags of the current revision)",
        "env": "environment whose settings apply: local, stage or prod (prod: vX.Y.Z only)",
        "image": "image repository (default: IMAGE_NAME of the environment)",
    },
    iterable=["tag"],
    name="push",
)
def push_task(c, registry=None, tag=None, env="local", image=None):
    """Push the image to a registry (credentials: REGISTRY_USERNAME/PASSWORD or Docker config)."""
    try:
        push(c, env=env, registry=registry, tags=tag or (), image=image)
    except DockerException as error:
        raise _docker_error(error) from None


@task(help={"force": "download again even when the wheelhouse is current"}, name="wheelhouse")
def wheelhouse_task(c, force=False):
    """Download the wheels of the backend's pinned dependencies for the image (cp311 x86_64)."""
    wheelhouse.build(force=force)


@task(name="lock")
def lock_task(c):
    """Regenerate backend/requirements.lock (every pin) from backend/pyproject.toml."""
    wheelhouse.lock()


@task(help={"force": "rebuild even when the base image exists"})
def base(c, force=False):
    """Build the local debootstrap Python 3.11 base image (once; needs root)."""
    baseimage.build(engine.ensure_engine(), force=force)


@task(name="engine")
def engine_task(c):
    """Make sure a Docker engine runs (installs docker.io and starts dockerd when root)."""
    client = engine.ensure_engine()
    version = client.version()
    ok(f"Docker engine {version.get('Version')} (API {version.get('ApiVersion')})")


@task(help={"ref": "image reference (default: <IMAGE_NAME>:<short sha> of HEAD)"})
def inspect(c, ref=None):
    """Show user, entry point, labels, health check, size and layers of the image."""
    ref = (
        ref
        or image_refs(load_config("local")["IMAGE_NAME"], imagetags.revision(REPO_ROOT).tags)[-1]
    )
    client = engine.ensure_engine()
    try:
        info = describe(client, ref)
    except ImageNotFound:
        raise Exit(f"No local image {ref}; run invoke images.build first.") from None
    rows = [
        ("user", info["user"]),
        ("entrypoint", " ".join([*info["entrypoint"], *info["cmd"]])),
        ("healthcheck", " ".join(info["healthcheck"])),
        ("size", f"{info['size'] / 1e6:.1f} MB"),
        *sorted(info["labels"].items()),
    ]
    print_table(ref, ("field", "value"), rows)
    print_table(
        "Layers",
        ("instruction", "size"),
        [(step_, f"{size / 1e6:.1f} MB") for step_, size in iter_layers_sizes(client, ref) if size],
    )


@task(
    help={
        "env": "environment whose IMAGE_NAME is used: stage or prod",
        "tag": "image tag (default: release tag of HEAD, else its short sha)",
    },
    name="load",
)
def load_task(c, env="stage", tag=None):
    """Copy the image from the local Docker engine into k3s (for a server without a registry)."""
    from desbordante_ops import k3s

    tag = tag or imagetags.revision(REPO_ROOT).tags[0]
    k3s.load_into_k3s(c, f"{load_config(env)['IMAGE_NAME']}:{tag}")
