"""The edge of a cluster environment: HTTPS, redirects, HSTS, per-client limits, who may call.

Everything is computed from the settings (`invoke config --env`), nothing is hand-edited:
- the render (cluster/manifests/render.py) adds `release_components` (k8s/components: `https`,
  `api-auth`, `api-allowlist`, as configured) and `release_patches`: every Ingress's host,
  Traefik entrypoint, TLS annotations and middleware chain, and every middleware's values;
- optional objects carry the instance label, so deploy's label-scoped prune removes them
  when the settings drop them; deploy also applies Traefik's cluster-wide configuration
  (cluster/manifests/traefik.py);
- bootstrap's smoke test reaches the API with `ingress_client_options`;
- the doctor shows cluster/certificates.py's `tls_checks` (TLS mode, certificate expiry).

Routers (Ingresses) and their middlewares, in order (TLS_MODE acme or selfsigned):
    api          websecure  hsts, [api-allowlist], [api-auth], upload-limit
    api-limited  websecure  hsts, [api-allowlist], [api-auth], rate-limit, in-flight,
                            upload-limit   (POST /api/v1/datasets and /api/v1/tasks only)
    flower       websecure  hsts, flower-auth
    *-redirect   web        redirect-https (nothing else: plain HTTP only redirects)
With TLS_MODE=off the first three are on `web` without hsts and there is no redirect. The
rate limit and in-flight limit run before the body is buffered, so a client over its limit
never uploads a byte more.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from invoke import Exit

from desbordante_ops.cluster import kube, names
from desbordante_ops.core.settings import EnvConfig
from desbordante_service.datasets.upload import ENVELOPE_ALLOWANCE

ROUTER = "traefik.ingress.kubernetes.io/router."
WEB, WEBSECURE = "web", "websecure"
RESOLVER = "letsencrypt"  # Traefik certificate resolver (HelmChartConfig) of TLS_MODE=acme

# Ingresses (k8s/base: api, flower, api-limited; component https: the redirects).
API_LIMITED = "api-limited"
API_REDIRECT = "api-redirect"
FLOWER_REDIRECT = "flower-redirect"
# Middlewares (k8s/base/middlewares.yaml, k8s/components/*).
UPLOAD_LIMIT = "upload-limit"
RATE_LIMIT = "rate-limit"
IN_FLIGHT = "in-flight"
FLOWER_AUTH = "flower-auth"
HSTS = "hsts"
REDIRECT = "redirect-https"
API_AUTH = "api-auth"
API_ALLOWLIST = "api-allowlist"
# Kustomize components (k8s/components/<name>) and the objects each adds.
COMPONENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "https": (
        ("Middleware", REDIRECT),
        ("Middleware", HSTS),
        ("Ingress", API_REDIRECT),
        ("Ingress", FLOWER_REDIRECT),
    ),
    "api-auth": (("Middleware", API_AUTH),),
    "api-allowlist": (("Middleware", API_ALLOWLIST),),
}


@dataclass(frozen=True)
class Route:
    """One Traefik router: an Ingress, its host, entrypoint, TLS and middleware chain."""

    ingress: str
    host: str
    entrypoint: str
    tls: bool
    middlewares: tuple[str, ...]

    def annotations(self, namespace: str, resolver: str | None) -> dict[str, str]:
        """The Ingress annotations Traefik reads for this router."""
        refs = ",".join(f"{namespace}-{m}@kubernetescrd" for m in self.middlewares)
        annotations = {f"{ROUTER}entrypoints": self.entrypoint, f"{ROUTER}middlewares": refs}
        if self.tls:
            annotations[f"{ROUTER}tls"] = "true"
            if resolver:
                annotations[f"{ROUTER}tls.certresolver"] = resolver
        return annotations


def tls_on(cfg: EnvConfig) -> bool:
    return cfg.toolkit.TLS_MODE != "off"


def restricted(cfg: EnvConfig) -> bool:
    return cfg.toolkit.API_ACCESS == "restricted"


def check(cfg: EnvConfig) -> None:
    """Exit with one line when the edge settings cannot work together."""
    toolkit, env_file = cfg.toolkit, f"env/{cfg.name}.env"
    for key in ("API_HOST", "FLOWER_INGRESS_HOST"):
        if not getattr(toolkit, key):
            raise Exit(f"{key} is not set; set it in {env_file} (env/README.md explains it).")
    if toolkit.TLS_MODE == "acme" and "@" not in toolkit.ACME_EMAIL:
        raise Exit(
            f"TLS_MODE=acme needs ACME_EMAIL (the Let's Encrypt account e-mail); set it in "
            f"{env_file}, or use TLS_MODE=selfsigned (or off) on a server without a public name."
        )


def components(cfg: EnvConfig) -> list[str]:
    """The optional components of k8s/components this environment renders."""
    chosen = ["https"] if tls_on(cfg) else []
    if restricted(cfg):
        chosen.append("api-auth")
        if cfg.toolkit.allowed_networks:
            chosen.append("api-allowlist")
    return chosen


def routes(cfg: EnvConfig) -> list[Route]:
    """Every router of the environment (see the module doc for the table)."""
    toolkit, tls = cfg.toolkit, tls_on(cfg)
    entrypoint = WEBSECURE if tls else WEB
    hsts = (HSTS,) if tls else ()
    guard = (*hsts, *(m for m in (API_ALLOWLIST, API_AUTH) if _has(cfg, m)))
    result = [
        Route(names.API, toolkit.API_HOST, entrypoint, tls, (*guard, UPLOAD_LIMIT)),
        Route(
            API_LIMITED,
            toolkit.API_HOST,
            entrypoint,
            tls,
            (*guard, RATE_LIMIT, IN_FLIGHT, UPLOAD_LIMIT),
        ),
        Route(names.FLOWER, toolkit.FLOWER_INGRESS_HOST, entrypoint, tls, (*hsts, FLOWER_AUTH)),
    ]
    if tls:
        result += [
            Route(API_REDIRECT, toolkit.API_HOST, WEB, False, (REDIRECT,)),
            Route(FLOWER_REDIRECT, toolkit.FLOWER_INGRESS_HOST, WEB, False, (REDIRECT,)),
        ]
    return result


def _has(cfg: EnvConfig, middleware: str) -> bool:
    return any(("Middleware", middleware) in COMPONENTS[name] for name in components(cfg))


def middleware_values(cfg: EnvConfig) -> dict[str, dict[str, Any]]:
    """Middleware name -> {JSON pointer in the object: value} from the settings."""
    toolkit = cfg.toolkit
    values: dict[str, dict[str, Any]] = {
        UPLOAD_LIMIT: {
            "/spec/buffering/maxRequestBodyBytes": cfg.backend.MAX_UPLOAD_SIZE_BYTES
            + ENVELOPE_ALLOWANCE
        },
        RATE_LIMIT: {
            "/spec/rateLimit/average": toolkit.EDGE_RATE_AVERAGE,
            "/spec/rateLimit/period": toolkit.EDGE_RATE_PERIOD,
            "/spec/rateLimit/burst": toolkit.EDGE_RATE_BURST,
        },
        IN_FLIGHT: {"/spec/inFlightReq/amount": toolkit.EDGE_INFLIGHT},
    }
    if tls_on(cfg):
        values[HSTS] = {"/spec/headers/stsSeconds": toolkit.HSTS_SECONDS}
    if _has(cfg, API_ALLOWLIST):
        values[API_ALLOWLIST] = {"/spec/ipAllowList/sourceRange": toolkit.allowed_networks}
    return values


def _patch(kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(ops)}


def _ops(values: dict[str, Any], op: str = "replace") -> list[dict[str, Any]]:
    return [{"op": op, "path": path, "value": value} for path, value in values.items()]


def release_patches(cfg: EnvConfig) -> list[dict[str, Any]]:
    """Kustomize patches of the release layer: routers, middleware values, instance labels."""
    check(cfg)
    namespace = cfg.namespace
    resolver = RESOLVER if cfg.toolkit.TLS_MODE == "acme" else None
    patches = [
        _patch(
            "Ingress",
            route.ingress,
            _ops(
                {
                    "/spec/rules/0/host": route.host,
                    "/metadata/annotations": route.annotations(namespace, resolver),
                }
            ),
        )
        for route in routes(cfg)
    ]
    patches += [
        _patch("Middleware", name, _ops(values)) for name, values in middleware_values(cfg).items()
    ]
    instance = "/metadata/labels/" + names.INSTANCE_LABEL.replace("/", "~1")
    patches += [
        _patch(kind, name, _ops({instance: namespace}, "add"))
        for component in components(cfg)
        for kind, name in COMPONENTS[component]
    ]
    return patches


def release_components(cfg: EnvConfig, workdir: Path) -> list[str]:
    """Paths (relative to the release layer in WORKDIR) of the components to add."""
    base = cfg.root / "k8s" / "components"
    return [os.path.relpath(base / name, workdir) for name in components(cfg)]


# --- Reaching the API through this server's Traefik (bootstrap's smoke test) --------------


def api_auth_password(core: Any, namespace: str) -> str:
    """The restricted API's basic-auth password from its Secret (never printed)."""
    secret = kube.read_or_none(core.read_namespaced_secret, names.ApiAuthSecret.NAME, namespace)
    raw = ((secret.data or {}) if secret is not None else {}).get(names.ApiAuthSecret.PASSWORD)
    if not raw:
        raise Exit(
            f"Secret {names.ApiAuthSecret.NAME} is missing in {namespace}; run "
            "`invoke secrets.generate` first."
        )
    return base64.b64decode(raw).decode("utf-8")


def ingress_client_options(cfg: EnvConfig, core: Any) -> dict[str, Any]:
    """httpx.Client arguments that reach CFG's API through Traefik on 127.0.0.1.

    The certificate is not verified here: the connection never leaves this host, and a
    fresh ACME certificate may not be issued yet (the doctor checks certificates).
    """
    options: dict[str, Any] = {
        "base_url": ("https" if tls_on(cfg) else "http") + "://127.0.0.1",
        "headers": {"Host": cfg.toolkit.API_HOST},
        "verify": False,
    }
    if restricted(cfg):
        options["auth"] = (cfg.toolkit.API_AUTH_USER, api_auth_password(core, cfg.namespace))
    return options
