"""`images.*`: build, push, wheelhouse, lock, inspect and load the backend image."""

from __future__ import annotations

from docker.errors import ImageNotFound
from invoke import Context, Exit, task

from desbordante_ops.cluster.host import k3s
from desbordante_ops.core.console import print_table
from desbordante_ops.core.settings import ENV_NAMES, load_config
from desbordante_ops.image import engine
from desbordante_ops.image.build import build_backend
from desbordante_ops.image.inspect import describe, layers
from desbordante_ops.image.push import push_image
from desbordante_ops.image.refs import image_refs
from desbordante_ops.image.tags import publish_tags, revision
from desbordante_ops.image.wheelhouse import build_wheelhouse, lock_requirements
from desbordante_ops.tasks import options


@task(
    help={
        "tag": "Extra tag or full reference (repeatable), besides <sha> and vX.Y.Z",
        "base_image": "Base image (default: the Dockerfile's python:3.11-slim)",
        "no_cache": "Build every layer anew",
        "image": "Image repository (default: IMAGE_NAME of env/local.env)",
    },
    iterable=["tag"],
)
def build(
    c: Context,
    tag: list[str] | None = None,
    base_image: str | None = None,
    no_cache: bool = False,
    image: str | None = None,
) -> None:
    """Build the backend image (tags <sha>[, vX.Y.Z]; -dirty on a dirty tree)."""
    cfg = load_config("local")
    build_backend(c, cfg, tag or (), base_image=base_image, no_cache=no_cache, image=image)


@task(
    help={
        "registry": "Registry host[:port] (default: IMAGE_REGISTRY of the environment)",
        "tag": "Tag to push (repeatable; default: the tags of the current revision)",
        "env": f"Environment whose settings apply: {', '.join(ENV_NAMES)} (prod: vX.Y.Z only)",
        "image": "Image repository (default: IMAGE_NAME of the environment)",
        "dry_run": options.DRY_RUN,
    },
    iterable=["tag"],
)
def push(
    c: Context,
    registry: str | None = None,
    tag: list[str] | None = None,
    env: str = "local",
    image: str | None = None,
    dry_run: bool = False,
) -> None:
    """Push the image to a registry (credentials: REGISTRY_USERNAME/PASSWORD or Docker config)."""
    cfg = load_config(env)
    push_image(c, cfg, registry=registry, push_tags=tag or (), image=image, dry_run=dry_run)


@task(help={"force": "Download again even when the wheelhouse is current"})
def wheelhouse(c: Context, force: bool = False) -> None:
    """Download the wheels of the backend's pinned dependencies for the image (cp311 x86_64)."""
    build_wheelhouse(c, force=force)


@task
def lock(c: Context) -> None:
    """Regenerate backend/requirements.lock (every pin) from backend/pyproject.toml."""
    lock_requirements(c)


@task(help={"ref": "Image reference (default: <IMAGE_NAME>:<short sha> of HEAD)"})
def inspect(c: Context, ref: str | None = None) -> None:
    """Show user, entry point, labels, health check, size and layers of the image."""
    cfg = load_config("local")
    ref = ref or image_refs(cfg.toolkit.IMAGE_NAME, revision(c, cfg.root).tags)[-1]
    client = engine.connect()
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
        [(i, f"{s / 1e6:.1f} MB") for i, s in layers(client, ref) if s],
    )


@task(help={"env": "Environment whose IMAGE_NAME is used: stage or prod", "tag": options.TAG})
def load(c: Context, env: str = "stage", tag: str | None = None) -> None:
    """Copy the image from the local Docker engine into k3s (for a server without a registry)."""
    cfg = load_config(env)
    tag = tag or revision(c, cfg.root).tags[0]
    k3s.load_into_k3s(c, f"{cfg.toolkit.IMAGE_NAME}:{tag}")


@task(
    help={
        "ref": "Git ref being built, e.g. refs/heads/main or refs/tags/v1.2.3 ($GITHUB_REF)",
        "output": "Also write env=... and tags=... lines to this file (e.g. $GITHUB_OUTPUT)",
    }
)
def tags(c: Context, ref: str = "", output: str | None = None) -> None:
    """Print the environment and tags CI publishes for a git ref; refuse non-release tags."""
    if not ref:
        raise Exit("Pass --ref, e.g. --ref refs/heads/main.")
    cfg = load_config("local")
    env, published = publish_tags(revision(c, cfg.root), ref)
    lines = [f"env={env}", f"tags={' '.join(published)}"]
    print("\n".join(lines))
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
