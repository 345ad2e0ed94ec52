"""The edge of a cluster environment: HTTPS, redirects, HSTS, per-client limits, who may call.

Everything is computed from the settings (`invoke config --env`), nothing is hand-edited:
- the render (cluster/render.py) adds `release_components` (k8s/components: `https`,
  `api-auth`, `api-allowlist`, as configured) and `release_patches`: every Ingress's host,
  Traefik entrypoint, TLS annotations and middleware chain, and every middleware's values;
- deploy applies `traefik_config` (k3s's Traefik, cluster-wide: ACME resolver with acme.json
  on a volume, client IPs kept for the per-IP limits) when the caller may, and `prune`s
  optional edge objects the environment no longer renders;
- the doctor shows `tls_checks` (the TLS mode, when the served certificates expire);
- bootstrap's smoke test reaches the API with `ingress_client_options`.

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
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from invoke import Context, Exit

from desbordante_ops.cluster import kube, names
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.core.console import ok, step, warn
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

# Traefik of k3s (kube-system/traefik, helm chart bundled with k3s).
TRAEFIK_NAMESPACE = "kube-system"
TRAEFIK_CONFIG = "traefik"
TRAEFIK_UID = 65532  # the chart's podSecurityContext runAsUser / runAsGroup
ACME_DIR = "/data"  # the chart's persistence.path
# Host names a public CA never issues a certificate for.
PRIVATE_SUFFIXES = (".local", ".localhost", ".internal", ".test", ".example", ".invalid", ".lan")
CERT_MIN_DAYS = 14  # Traefik renews 30 days ahead: fewer left means renewal is failing
TLS_TIMEOUT_SECONDS = 5.0


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


# --- Traefik of k3s: one cluster-wide HelmChartConfig ---------------------------------------


def traefik_values(cfg: EnvConfig, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Helm values for k3s's Traefik, on top of CURRENT (what the cluster has now).

    Always: the Service keeps client IPs (externalTrafficPolicy Local, which ServiceLB honours),
    so rate limits and the allow-list see each client rather than the node. With acme: the
    Let's Encrypt resolver (HTTP-01 on `web`) storing acme.json on a small volume, so
    certificates survive a restart. Other keys of CURRENT stay, among them another
    environment's resolver (Traefik is shared by stage and prod).
    """
    values = json.loads(json.dumps(current or {}))  # a deep copy
    values.setdefault("service", {}).setdefault("spec", {})["externalTrafficPolicy"] = "Local"
    if cfg.toolkit.TLS_MODE == "acme":
        values["persistence"] = {"enabled": True, "size": "128Mi", "path": ACME_DIR}
        values.setdefault("podSecurityContext", {}).update(
            fsGroup=TRAEFIK_UID, fsGroupChangePolicy="OnRootMismatch"
        )
        values.setdefault("certificatesResolvers", {})[RESOLVER] = {
            "acme": {
                "email": cfg.toolkit.ACME_EMAIL,
                "storage": f"{ACME_DIR}/acme.json",
                "httpChallenge": {"entryPoint": WEB},
            }
        }
    return values


def traefik_config(values: dict[str, Any]) -> dict[str, Any]:
    """The HelmChartConfig kube-system/traefik carrying VALUES."""
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChartConfig",
        "metadata": {
            "name": TRAEFIK_CONFIG,
            "namespace": TRAEFIK_NAMESPACE,
            "labels": dict(names.MANAGED_BY),
        },
        "spec": {"valuesContent": yaml.safe_dump(values, sort_keys=True)},
    }


def acme_warnings(cfg: EnvConfig) -> list[str]:
    """Why Let's Encrypt would not issue for this environment's hosts (empty: no reason)."""
    if cfg.toolkit.TLS_MODE != "acme":
        return []
    problems = []
    for host in (cfg.toolkit.API_HOST, cfg.toolkit.FLOWER_INGRESS_HOST):
        try:
            ipaddress.ip_address(host)
            problems.append(f"{host} is an IP address")
        except ValueError:
            if "." not in host or host.endswith(PRIVATE_SUFFIXES):
                problems.append(f"{host} is not a public DNS name")
    return [
        f"Let's Encrypt issues no certificate: {problem}; use the server's public names, or "
        f"TLS_MODE=selfsigned in env/{cfg.name}.env"
        for problem in problems
    ]


def _kubectl(c: Context, cfg: EnvConfig, *args: str, warn_only: bool = True) -> Any:
    return c.run(kube.kubectl(cfg, *args), hide=True, warn=warn_only, in_stream=False)


class NoHelmChartConfig(Exception):
    """The cluster has no HelmChartConfig kind: not k3s, or k3s without its Traefik."""


def _last_line(result: Any) -> str:
    lines = (result.stderr or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.exited}"


def current_traefik_values(c: Context, cfg: EnvConfig) -> dict[str, Any] | None:
    """The values of the cluster's HelmChartConfig kube-system/traefik (None when absent)."""
    result = _kubectl(
        c, cfg, "get", "helmchartconfig", TRAEFIK_CONFIG, "-n", TRAEFIK_NAMESPACE,
        "-o", "json", "--ignore-not-found",
    )  # fmt: skip
    if not result.ok:
        if "doesn't have a resource type" in (result.stderr or ""):
            raise NoHelmChartConfig(_last_line(result))
        raise Exit(f"Cannot read Traefik's HelmChartConfig: {_last_line(result)}")
    if not (result.stdout or "").strip():
        return None
    content = json.loads(result.stdout)["spec"].get("valuesContent") or ""
    return yaml.safe_load(content) or {}


def may_configure_traefik(c: Context, cfg: EnvConfig) -> bool:
    """Whether the kubeconfig's user may write Traefik's config in kube-system (an admin)."""
    result = _kubectl(
        c, cfg, "auth", "can-i", "patch", "helmchartconfigs.helm.cattle.io",
        "-n", TRAEFIK_NAMESPACE,
    )  # fmt: skip
    return bool(result.ok)


def apply_traefik_config(c: Context, cfg: EnvConfig) -> bool:
    """Apply Traefik's HelmChartConfig for CFG (admins only); True when it changed.

    A change makes k3s's helm controller upgrade Traefik: a few seconds without the edge.
    """
    for line in acme_warnings(cfg):
        warn(line)
    if not may_configure_traefik(c, cfg):
        warn(
            "Traefik (HTTPS, ACME, client IPs) is configured cluster-wide in kube-system, which "
            "this kubeconfig may not change: skipped; a cluster admin runs `invoke deploy` or "
            "`invoke bootstrap` once to set it up."
        )
        return False
    try:
        current = current_traefik_values(c, cfg)
    except NoHelmChartConfig:
        warn(
            "This cluster has no HelmChartConfig (not k3s's bundled Traefik): configure your "
            f"ingress controller yourself (certificate resolver `{RESOLVER}` for "
            "TLS_MODE=acme, client IPs kept for the per-IP limits); skipped."
        )
        return False
    values = traefik_values(cfg, current)
    if current == values:
        ok("Traefik configuration already in place")
        return False
    step(f"Configuring Traefik ({TRAEFIK_NAMESPACE}/{TRAEFIK_CONFIG}); it restarts once")
    with tempfile.NamedTemporaryFile("w", prefix="desbordante-traefik-", suffix=".yaml") as fh:
        yaml.safe_dump(traefik_config(values), fh, sort_keys=False)
        fh.flush()
        result = _kubectl(c, cfg, "apply", "-f", fh.name)
    if not result.ok:
        raise Exit(f"Applying Traefik's HelmChartConfig failed: {_last_line(result)}")
    ok(f"Traefik configured (TLS_MODE={cfg.toolkit.TLS_MODE})")
    return True


def stale_objects(cfg: EnvConfig) -> list[tuple[str, str]]:
    """Optional edge objects (kind, name) this environment's settings no longer render."""
    chosen = components(cfg)
    return [obj for name, objects in COMPONENTS.items() if name not in chosen for obj in objects]


def prune(c: Context, cfg: EnvConfig) -> None:
    """Delete optional edge objects the environment no longer renders (after the apply).

    `kubectl apply` never deletes: without this, a redirect Ingress left from TLS_MODE=acme
    would shadow the plain-HTTP routes of TLS_MODE=off.
    """
    kinds = {"Ingress": "ingresses.networking.k8s.io", "Middleware": "middlewares.traefik.io"}
    refs = [f"{kinds[kind]}/{name}" for kind, name in stale_objects(cfg)]
    if not refs:
        return
    result = _kubectl(
        c, cfg, "delete", "-n", cfg.namespace, "--ignore-not-found", "--wait=false", *refs,
        warn_only=False,
    )  # fmt: skip
    for line in (result.stdout or "").splitlines():
        if line.strip():
            ok(f"edge: {line.strip()}")


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


# --- Doctor: TLS mode and certificates ------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The certificate a TLS endpoint serves for HOST, or why none could be read."""

    host: str
    not_after: dt.datetime | None = None
    issuer: str = ""
    problem: str = ""


def served_certificate(
    host: str,
    address: str = "127.0.0.1",
    port: int = 443,
    cafile: str | None = None,
    timeout: float = TLS_TIMEOUT_SECONDS,
) -> Served:
    """Connect to ADDRESS:PORT with SNI=HOST, verify the certificate for HOST (system CAs, or
    CAFILE) and return when it expires; PROBLEM says why not (untrusted, no answer)."""
    context = ssl.create_default_context(cafile=cafile)
    try:
        with (
            socket.create_connection((address, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return Served(host, problem=f"certificate not trusted: {exc.verify_message}")
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return Served(host, problem=f"no TLS answer on {address}:{port}: {reason}")
    seconds = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    rdns: Any = cert.get("issuer", ())  # ((("commonName", "R11"),), ...)
    issuer = {key: value for rdn in rdns for key, value in rdn}
    return Served(
        host,
        not_after=dt.datetime.fromtimestamp(seconds, dt.UTC),
        issuer=str(issuer.get("organizationName") or issuer.get("commonName") or "?"),
    )


def describe_mode(cfg: EnvConfig) -> str:
    """One line: which TLS mode is active and what it means."""
    toolkit = cfg.toolkit
    hsts = f", HSTS {toolkit.HSTS_SECONDS}s" if toolkit.HSTS_SECONDS else ", no HSTS"
    return {
        "acme": f"acme: Let's Encrypt certificates (HTTP-01), HTTP redirects to HTTPS{hsts}",
        "selfsigned": f"selfsigned: Traefik's own certificate, HTTP redirects to HTTPS{hsts}",
        "off": "off: plain HTTP, no certificate (credentials cross the network in clear)",
    }[toolkit.TLS_MODE]


def certificate_result(served: Served, now: dt.datetime | None = None) -> Result:
    """A doctor row for one served certificate: ok while it is trusted and not about to expire."""
    if served.not_after is None:
        return Result(False, f"{served.host}: {served.problem}")
    days = (served.not_after - (now or dt.datetime.now(dt.UTC))).days
    detail = f"{served.host}: issued by {served.issuer}, expires {served.not_after:%Y-%m-%d}"
    if days < CERT_MIN_DAYS:
        return Result(False, f"{detail} ({days} days left; renewal is failing)")
    return Result(True, f"{detail} ({days} days left)")


def tls_checks(cfg: EnvConfig, probe: Callable[[str], Served] = served_certificate) -> list[Check]:
    """Doctor rows for `doctor --env`: the TLS mode and, with acme, each host's certificate."""
    checks = [Check(f"TLS mode ({cfg.name})", lambda: Result(True, describe_mode(cfg)), "")]
    if cfg.toolkit.TLS_MODE != "acme":
        return checks
    fix = (
        "the host's DNS must point at this server and ports 80/443 be open; Traefik's log "
        "says why ACME failed: kubectl -n kube-system logs deploy/traefik"
    )
    for host in dict.fromkeys((cfg.toolkit.API_HOST, cfg.toolkit.FLOWER_INGRESS_HOST)):
        checks.append(Check(f"certificate {host}", partial(_certificate_row, probe, host), fix))
    return checks


def _certificate_row(probe: Callable[[str], Served], host: str) -> Result:
    return certificate_result(probe(host))
