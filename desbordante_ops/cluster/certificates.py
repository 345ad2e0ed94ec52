"""What `doctor --env` says about the edge: the TLS mode in effect and why (edge.tls_choice:
TLS_MODE, or what `auto` picked for the hosts), and with acme the served certificates.

`served_certificate` connects to this server's Traefik (127.0.0.1:443) with SNI = a host of
the environment, verifies the certificate against the system CAs and returns when it expires.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from desbordante_ops.cluster.manifests.edge import tls_choice
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.core.settings import EnvConfig

CERT_MIN_DAYS = 14  # Traefik renews 30 days ahead: fewer left means renewal is failing
TLS_TIMEOUT_SECONDS = 5.0


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
    """One line: which TLS mode is in effect, what it means and why it was chosen."""
    toolkit, choice = cfg.toolkit, tls_choice(cfg)
    hsts = f", HSTS {toolkit.HSTS_SECONDS}s" if toolkit.HSTS_SECONDS else ", no HSTS"
    meaning = {
        "acme": f"acme: Let's Encrypt certificates (HTTP-01), HTTP redirects to HTTPS{hsts}",
        "selfsigned": (
            f"selfsigned: Traefik's own certificate (clients skip verification, e.g. curl -k), "
            f"HTTP redirects to HTTPS{hsts}"
        ),
        "off": "off: plain HTTP, no certificate (credentials cross the network in clear)",
    }[choice.mode]
    return f"{meaning}; {choice.why}"


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
    """Doctor rows for `doctor --env`: the TLS mode in effect and why, and with acme each host's
    certificate (Traefik's self-signed one is trusted by nobody: nothing to verify)."""
    checks = [Check(f"TLS mode ({cfg.name})", lambda: Result(True, describe_mode(cfg)), "")]
    if tls_choice(cfg).mode != "acme":
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
