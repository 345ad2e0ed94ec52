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

TLS: `tls_choice` is the effective mode every decision reads (never TLS_MODE itself). An
explicit `acme`, `selfsigned` or `off` is taken as it is; `auto` (the default) picks `acme` when
every host is a public DNS name and Traefik's self-signed certificate otherwise (a `.localhost`
name, an IP address, a name under PRIVATE_SUFFIXES, a single label; one such host is enough,
as all hosts share one mode), and `why` says which and why.

Routers (Ingresses) and their middlewares, in order (effective mode acme or selfsigned):
    api          websecure  hsts, [api-allowlist], [api-auth], upload-limit
    api-limited  websecure  hsts, [api-allowlist], [api-auth], rate-limit, in-flight,
                            upload-limit   (POST /api/v1/datasets and /api/v1/tasks only)
    flower       websecure  hsts, flower-auth
    *-redirect   web        redirect-https (nothing else: plain HTTP only redirects)
With mode off the first three are on `web` without hsts and there is no redirect. The
rate limit and in-flight limit run before the body is buffered, so a client over its limit
never uploads a byte more.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from invoke import Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.core.settings import EnvConfig
from desbordante_service.datasets.upload import ENVELOPE_ALLOWANCE

ROUTER = "traefik.ingress.kubernetes.io/router."
WEB, WEBSECURE = "web", "websecure"
RESOLVER = "letsencrypt"  # Traefik certificate resolver (HelmChartConfig) of mode acme
# Host names a public CA never issues a certificate for: special-use and reserved names
# (RFC 6761: .localhost .test .example .invalid; RFC 6762: .local; RFC 8375: .home.arpa;
# ICANN: .internal) and common private ones. `.localhost` names reach the loopback address
# without any configuration in browsers, curl and the e2e client (tests/e2e/target.py).
PRIVATE_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".test",
    ".example",
    ".invalid",
    ".lan",
    ".home.arpa",
    ".localdomain",
)
HOST_KEYS = ("API_HOST", "FLOWER_INGRESS_HOST")

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


TlsMode = Literal["acme", "selfsigned", "off"]
MEANING: dict[str, str] = {
    "acme": "Let's Encrypt (ACME)",
    "selfsigned": "Traefik's self-signed certificate",
    "off": "plain HTTP",
}


@dataclass(frozen=True)
class TlsChoice:
    """The effective TLS mode of an environment and why: TLS_MODE, or what `auto` picked."""

    mode: TlsMode
    why: str  # e.g. "TLS_MODE=auto: api.x.localhost is a .localhost name, so Traefik's ..."
    requested: str  # the TLS_MODE setting: auto, acme, selfsigned or off

    @property
    def auto(self) -> bool:
        return self.requested == "auto"

    def describe(self) -> str:
        """One line for output, e.g. `TLS selfsigned (TLS_MODE=auto: ...)`."""
        return f"TLS {self.mode} ({self.why})"


NOT_SET = "not set"


def host_kind(host: str) -> str | None:
    """Why a public CA issues no certificate for HOST: "a .localhost name", "an IP address",
    "a single-label name", "not set"; None for a public DNS name."""
    name = host.strip().rstrip(".").lower()
    if not name:
        return NOT_SET
    try:
        ipaddress.ip_address(name.strip("[]"))
        return "an IP address"
    except ValueError:
        pass
    for suffix in PRIVATE_SUFFIXES:
        if name.endswith(suffix) or name == suffix[1:]:
            return f"a {suffix} name"
    if "." not in name:
        return "a single-label name"
    return None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _is(hosts: list[str], kind: str) -> str:
    """'h is a .localhost name', 'h1 and h2 are .localhost names', 'h1 and h2 are public'."""
    if len(hosts) == 1:
        return f"{hosts[0]} is {kind}"
    article, _, noun = kind.partition(" ")
    if article in ("a", "an"):  # a .localhost name -> .localhost names, an IP address -> ...es
        kind = noun + ("es" if noun.endswith("s") else "s")
    return f"{_and(hosts)} are {kind}"


def _where(source: str) -> str:
    if source == "flag":
        return "a --set flag"
    if source.startswith("environment"):
        return "the process environment"
    return source or "the settings"


def choose_tls(mode: str, hosts: Mapping[str, str], source: str = "") -> TlsChoice:
    """The effective TLS mode for TLS_MODE=MODE (set in SOURCE) and HOSTS (setting -> host).

    An explicit acme, selfsigned or off stays as it is. `auto`: acme when every host is a public
    DNS name; otherwise selfsigned, also when only some are (all hosts share one mode, and Let's
    Encrypt refuses the private ones). The reason names the hosts that decided.
    """
    if mode in ("acme", "selfsigned", "off"):
        return TlsChoice(cast(TlsMode, mode), f"TLS_MODE={mode} (set in {_where(source)})", mode)
    if mode != "auto":
        raise ValueError(f"TLS_MODE={mode!r} is not auto, acme, selfsigned or off")
    kinds: dict[str, str | None] = {}  # host (the setting's name when empty) -> why not public
    for key, host in hosts.items():
        kinds.setdefault(host or key, host_kind(host))
    groups: dict[str | None, list[str]] = {}
    for name, kind in kinds.items():
        groups.setdefault(kind, []).append(name)
    public = groups.pop(None, [])
    if not groups:
        why = f"TLS_MODE=auto: {_is(public, 'a public DNS name')}, so {MEANING['acme']}"
        return TlsChoice("acme", why, mode)
    reasons = ", ".join(_is(found, kind) for kind, found in groups.items() if kind)
    why = f"TLS_MODE=auto: {reasons}, so {MEANING['selfsigned']}"
    if public:
        only = f"{_and(public)} {'is' if len(public) == 1 else 'are'}"
        why += f" for every host (ACME only when every host is public; only {only})"
    return TlsChoice("selfsigned", why, mode)


def tls_choice(cfg: EnvConfig) -> TlsChoice:
    """The effective TLS mode of CFG and why (see choose_tls); what every TLS decision reads."""
    hosts = {key: getattr(cfg.toolkit, key) for key in HOST_KEYS}
    return choose_tls(cfg.toolkit.TLS_MODE, hosts, cfg.source("TLS_MODE"))


def describe_tls(cfg: EnvConfig) -> str:
    """One line for deploy/bootstrap/doctor output: the effective TLS mode and why."""
    return tls_choice(cfg).describe()


def tls_on(cfg: EnvConfig) -> bool:
    return tls_choice(cfg).mode != "off"


def restricted(cfg: EnvConfig) -> bool:
    return cfg.toolkit.API_ACCESS == "restricted"


def check(cfg: EnvConfig) -> None:
    """Exit with one line when the edge settings cannot work together."""
    toolkit, env_file = cfg.toolkit, f"env/{cfg.name}.env"
    for key in ("API_HOST", "FLOWER_INGRESS_HOST"):
        if not getattr(toolkit, key):
            raise Exit(f"{key} is not set; set it in {env_file} (env/README.md explains it).")
    choice = tls_choice(cfg)
    if choice.mode != "acme" or "@" in toolkit.ACME_EMAIL:
        return
    if choice.auto:
        hosts = _and([getattr(toolkit, key) for key in HOST_KEYS])
        raise Exit(
            f"TLS_MODE=auto picked ACME (Let's Encrypt) because every host is a public DNS name "
            f"({hosts}), and ACME needs ACME_EMAIL (the Let's Encrypt account e-mail): set "
            f"ACME_EMAIL in {env_file}, or TLS_MODE=selfsigned for Traefik's own certificate."
        )
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
    resolver = RESOLVER if tls_choice(cfg).mode == "acme" else None
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
    secret = read_or_none(core.read_namespaced_secret, names.ApiAuthSecret.NAME, namespace)
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
