"""Which running stack the end-to-end suite talks to, and how to reach it over HTTP."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from invoke import Context

from desbordante_ops.cluster import kube, names
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local.health import flower_auth, flower_url
from desbordante_ops.local.stack import LocalStack
from desbordante_ops.local.stacks import open_stack

OVERSIZE_TEST_MAX_BYTES = 16 * 1024 * 1024  # only send an oversize upload when this is cheap


@dataclass
class Target:
    """A stack under test: its URLs, Flower credentials and what the suite may do with it."""

    kind: str  # local | docker | env:<name> | url
    api_url: str
    flower_url: str | None = None
    flower_auth: tuple[str, str] | None = None
    flower_skip_reason: str = ""
    max_upload_bytes: int | None = None
    stack: LocalStack | None = field(default=None, repr=False)
    api_auth: tuple[str, str] | None = field(default=None, repr=False)  # restricted stage

    @property
    def restartable(self) -> bool:
        """The suite may restart it (down + up) to check persistence."""
        return self.stack is not None

    def restart(self) -> None:
        assert self.stack is not None
        self.stack.down(timeout=30)
        self.stack.up(timeout=120)


def _flower_auth_from_environment(cfg: EnvConfig | None) -> tuple[str, str] | None:
    password = os.environ.get("FLOWER_PASSWORD")
    user = os.environ.get("FLOWER_USER") or (cfg.backend.FLOWER_USER if cfg else "admin")
    return (user, password) if password else None


def _flower_auth_from_cluster(cfg: EnvConfig) -> tuple[str, str] | None:
    """Flower password from the cluster Secret, or None to fall back to the environment."""
    try:
        connection = kube.connect(cfg)
        secret = connection.core.read_namespaced_secret(names.FlowerSecret.NAME, cfg.namespace)
    except Exception:  # no cluster or kubeconfig (Exit), no secret, no permission
        return None
    raw = (secret.data or {}).get(names.FlowerSecret.PASSWORD)
    if not raw:
        return None
    return cfg.backend.FLOWER_USER, base64.b64decode(raw).decode("utf-8")


def _api_auth(cfg: EnvConfig) -> tuple[str, str] | None:
    """The API's basic auth when API_ACCESS=restricted: from the cluster Secret, else
    API_AUTH_PASSWORD in the environment."""
    if not edge.restricted(cfg):
        return None
    try:
        return cfg.toolkit.API_AUTH_USER, edge.api_auth_password(
            kube.connect(cfg).core, cfg.namespace
        )
    except Exception:  # no cluster or kubeconfig (Exit), no secret, no permission
        password = os.environ.get("API_AUTH_PASSWORD")
        return (cfg.toolkit.API_AUTH_USER, password) if password else None


def environment_target(env: str) -> Target:
    """A deployed environment (stage/prod): URLs from env/<env>.env."""
    cfg = load_config(env)
    auth = _flower_auth_from_cluster(cfg) or _flower_auth_from_environment(cfg)
    return Target(
        kind=f"env:{env}",
        api_url=cfg.toolkit.API_BASE_URL,
        flower_url=cfg.toolkit.FLOWER_BASE_URL or None,
        flower_auth=auth,
        flower_skip_reason=(
            ""
            if auth
            else "no Flower password: not readable from the cluster, FLOWER_PASSWORD unset"
        ),
        max_upload_bytes=cfg.backend.MAX_UPLOAD_SIZE_BYTES,
        api_auth=_api_auth(cfg),
    )


def url_target(api_url: str, flower_url: str | None) -> Target:
    """Anything reachable over HTTP (e.g. containers started by hand)."""
    auth = _flower_auth_from_environment(None)
    reason = ""
    if not flower_url:
        reason = "no --flower-url given"
    elif not auth:
        reason = "FLOWER_PASSWORD (and FLOWER_USER) not set in the environment"
    limit = os.environ.get("MAX_UPLOAD_SIZE_BYTES")
    return Target(
        kind="url",
        api_url=api_url.rstrip("/"),
        flower_url=flower_url.rstrip("/") if flower_url else None,
        flower_auth=auth,
        flower_skip_reason=reason,
        max_upload_bytes=int(limit) if limit else None,
    )


@contextmanager
def stack_target(docker: bool) -> Iterator[Target]:
    """The local stack (processes or containers): brought up here, down only if we started it."""
    cfg = load_config("local")
    stack = open_stack(Context(), cfg, docker)
    started = docker or not stack.is_running()
    try:
        stack.up(timeout=120)
        auth = flower_auth(cfg)
        yield Target(
            kind="docker" if docker else "local",
            api_url=cfg.toolkit.API_BASE_URL,
            flower_url=flower_url(cfg),
            flower_auth=auth,
            flower_skip_reason="" if auth else "no local Flower password file",
            max_upload_bytes=cfg.backend.MAX_UPLOAD_SIZE_BYTES,
            stack=stack,
        )
    finally:
        if started:
            stack.down(timeout=30)
