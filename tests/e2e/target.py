"""Which running stack the end-to-end suite talks to, and how to reach it over HTTP.

A deployed environment is reached at its derived URLs (env/<env>.env's hosts). Two things make
a local cluster with the shipped defaults work (`--env stage` on a laptop):
- `.localhost` names go to the loopback address (RFC 6761), whatever the system resolver says
  (glibc without systemd-resolved does not resolve them): `LoopbackTransport` connects to
  127.0.0.1 and keeps the name in the Host header and the TLS SNI, as a browser does;
- with Traefik's self-signed certificate in effect (edge.tls_choice: TLS_MODE=selfsigned, or
  auto with non-public hosts) the certificate is not verified, and only then.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from invoke import Context

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local.health import flower_auth, flower_url
from desbordante_ops.local.stack import LocalStack
from desbordante_ops.local.stacks import open_stack

OVERSIZE_TEST_MAX_BYTES = 16 * 1024 * 1024  # only send an oversize upload when this is cheap
LOOPBACK = "127.0.0.1"  # where `.localhost` names go (k3s's ServiceLB serves Traefik there too)


def is_loopback_name(host: str) -> bool:
    """`localhost` and every name under `.localhost` (RFC 6761: always the loopback address)."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


class LoopbackTransport(httpx.BaseTransport):
    """Sends requests for `.localhost` names to 127.0.0.1 with the name kept in the Host header
    and the TLS SNI (so Traefik routes by it and a verified certificate is checked against it);
    other names go out unchanged. VERIFY=False skips certificate verification. One connection
    pool per name: a connection made with one SNI never serves another name."""

    def __init__(self, verify: bool = True) -> None:
        self.verify = verify
        self._pools: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        pool = self._pools.get(host)
        if pool is None:
            pool = self._pools[host] = httpx.HTTPTransport(verify=self.verify)
        if not is_loopback_name(host):
            return pool.handle_request(request)
        sent = httpx.Request(  # a copy: the client's redirects and auth keep the real URL
            request.method,
            request.url.copy_with(host=LOOPBACK),
            headers=request.headers,  # Host: the name (and port) of the original URL
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return pool.handle_request(sent)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


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
    verify: bool = True  # False only with Traefik's self-signed certificate in effect
    tls: str = ""  # env targets: the TLS mode in effect and why (edge.tls_choice)

    @property
    def loopback_names(self) -> bool:
        """An URL of the target is a `.localhost` name (sent to 127.0.0.1 by the client)."""
        urls = [self.api_url, self.flower_url or ""]
        return any(is_loopback_name(httpx.URL(url).host) for url in urls if url)

    def client_options(self) -> dict[str, Any]:
        """httpx.Client arguments reaching this target: a LoopbackTransport when a name is
        under `.localhost` or the certificate is not to be verified, else none (defaults)."""
        if self.verify and not self.loopback_names:
            return {}
        return {"transport": LoopbackTransport(verify=self.verify)}

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
        connection = connect(cfg)
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
        return cfg.toolkit.API_AUTH_USER, edge.api_auth_password(connect(cfg).core, cfg.namespace)
    except Exception:  # no cluster or kubeconfig (Exit), no secret, no permission
        password = os.environ.get("API_AUTH_PASSWORD")
        return (cfg.toolkit.API_AUTH_USER, password) if password else None


def environment_target(env: str, cfg: EnvConfig | None = None) -> Target:
    """A deployed environment (stage/prod): URLs from env/<env>.env (CFG: its settings, loaded
    when not given); the certificate is verified unless Traefik's self-signed one is in effect."""
    cfg = cfg or load_config(env)
    choice = edge.tls_choice(cfg)
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
        verify=choice.mode != "selfsigned",
        tls=choice.describe(),
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
