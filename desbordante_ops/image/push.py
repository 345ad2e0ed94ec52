"""Push the backend image's tags to a registry with docker-py, with per-layer progress.

Errors the engine reports inside the push stream fail the push (docker-py does not raise on
them). Credentials: REGISTRY_USERNAME and REGISTRY_PASSWORD (or REGISTRY_PASSWORD_FILE) from
the environment, else the Docker config; they are never printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from invoke import Context, Exit

from desbordante_ops.core.console import ok, progress
from desbordante_ops.core.plan import Plan, Step, execute, note, read_or_step, refused, unknown
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image import engine, tags
from desbordante_ops.image.refs import image_refs, in_registry, split_ref

USER_VAR, PASSWORD_VAR = "REGISTRY_USERNAME", "REGISTRY_PASSWORD"


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
    except (APIError, DockerException) as error:
        raise Exit(
            f"Push of {ref} failed: {getattr(error, 'explanation', None) or error}"
        ) from None


def check_pushable(refs: Iterable[str], env: str) -> None:
    """Prod only ever receives clean semver tags."""
    if env != "prod":
        return
    refused = [ref for ref in refs if not tags.is_release_tag(split_ref(ref)[1] or "")]
    if refused:
        raise Exit(
            f"Refusing to push {refused[0]} for prod: only clean vX.Y.Z tags go to prod "
            "(tag a release on a clean tree)."
        )


def plan(
    c: Context,
    cfg: EnvConfig,
    registry: str | None = None,
    push_tags: Iterable[str] = (),
    image: str | None = None,
) -> list[tuple[str, str]]:
    """(local ref, remote ref) pairs a push would handle; checks the prod rule."""
    image = image or cfg.toolkit.IMAGE_NAME
    registry = registry if registry is not None else cfg.toolkit.IMAGE_REGISTRY
    chosen = list(push_tags) or tags.revision(c, cfg.root).tags
    if cfg.name == "prod":
        chosen = [tag for tag in chosen if tags.is_release_tag(tag)] or chosen
    local_refs = image_refs(image, chosen)
    remote_refs = [
        f"{in_registry(repository, registry)}:{tag}"
        for repository, tag in map(split_ref, local_refs)
    ]
    check_pushable(remote_refs, cfg.name)
    return list(zip(local_refs, remote_refs, strict=True))


def push_plan(
    c: Context,
    cfg: EnvConfig,
    registry: str | None = None,
    push_tags: Iterable[str] = (),
    image: str | None = None,
    auth: dict[str, str] | None = None,
    digests: dict[str, str] | None = None,
) -> Plan:
    """What `images.push` does: per reference, the local image it starts from (read from the
    engine), the tag it adds and the push; where the credentials come from. Each push puts its
    digest into DIGESTS."""
    pairs = plan(c, cfg, registry, push_tags, image)
    auth = auth or auth_from_environment()
    credentials = (
        f"{USER_VAR} / {PASSWORD_VAR} from the environment"
        if auth
        else "the Docker config of this user (if any)"
    )
    title = f"images.push ({cfg.name})"
    client, steps = read_or_step(engine.connect, "the Docker engine")
    found = digests if digests is not None else {}
    for local, remote in pairs:
        if client is None:
            steps.append(
                note("push", f"{remote} (local image not checked; credentials: {credentials})")
            )
            continue
        try:
            source = client.images.get(local)
        except ImageNotFound:
            steps.append(
                refused(
                    "push",
                    f"{remote}: no local image {local} (the real run stops here)",
                    f"No local image {local}; run invoke images.build first.",
                )
            )
            continue
        except DockerException as error:
            steps.append(unknown(f"local image {local}", str(error).splitlines()[0][:120]))
            continue
        if remote != local:
            steps.append(
                Step("tag", f"{local} as {remote}", partial(source.tag, *split_ref(remote)))
            )

        def push_one(remote: str = remote, engine_client: docker.DockerClient = client) -> None:
            found[remote] = push_ref(engine_client, remote, auth)
            ok(f"Pushed {remote} ({found[remote]})")

        what = f"{remote} (local image {source.short_id}; credentials: {credentials})"
        steps.append(Step("push", what, push_one))
    return Plan(title, steps)


def push_image(
    c: Context,
    cfg: EnvConfig,
    registry: str | None = None,
    push_tags: Iterable[str] = (),
    image: str | None = None,
    auth: dict[str, str] | None = None,
    dry_run: bool = False,
) -> dict[str, str]:
    """Push the image's tags for the current revision (or PUSH_TAGS); remote ref -> digest."""
    digests: dict[str, str] = {}
    execute(push_plan(c, cfg, registry, push_tags, image, auth, digests), dry_run)
    return digests
