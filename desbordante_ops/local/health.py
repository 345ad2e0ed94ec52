"""Readiness of the local stack's services, shared by the process and the container stack."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.local.credentials import read_secret, secret_path

HTTP_TIMEOUT = 3.0
PORT_KEYS = {"api": "APPLICATION_SERVER_PORT", "flower": "FLOWER_PORT"}


@dataclass(frozen=True)
class Health:
    """A service's readiness: READY, or not yet (DETAIL says why), or FAILED for good."""

    ready: bool
    detail: str
    failed: bool = False


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `invoke status`."""

    name: str
    state: str
    pid: int | None
    port: str
    health: str
    image: str = ""


def flower_url(cfg: EnvConfig) -> str:
    return cfg.toolkit.FLOWER_BASE_URL + cfg.backend.FLOWER_URL_PREFIX


def flower_auth(cfg: EnvConfig) -> tuple[str, str] | None:
    """Flower basic-auth credentials of the local stack (None before the first `up`)."""
    path = secret_path("FLOWER_PASSWORD", root=cfg.root)
    return (cfg.backend.FLOWER_USER, read_secret(path)) if path.exists() else None


def port_of(cfg: EnvConfig, service: str) -> str:
    return cfg.value(PORT_KEYS[service]) if service in PORT_KEYS else "-"


def probe(service: str, cfg: EnvConfig) -> Health:
    """HTTP health of a service: api → /health/ready, flower → /healthcheck (with auth)."""
    if service == "api":
        url, auth = f"{cfg.toolkit.API_BASE_URL}/health/ready", None
    elif service == "flower":
        url, auth = f"{flower_url(cfg)}/healthcheck", flower_auth(cfg)
    else:
        raise ValueError(f"{service} has no HTTP health endpoint")
    try:
        response = httpx.get(url, auth=auth, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        return Health(False, f"no answer ({type(exc).__name__})")
    if response.status_code == 200:
        return Health(True, "ready" if service == "api" else "answers")
    return Health(False, f"HTTP {response.status_code}")
