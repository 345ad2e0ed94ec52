"""k3s's Traefik, shared by stage and prod: its HelmChartConfig `kube-system/traefik`.

Set once per cluster by a cluster admin's `invoke deploy` or `bootstrap` (a devops kubeconfig
may not write kube-system; it says so and skips): the Traefik Service keeps client IPs
(externalTrafficPolicy Local, which k3s's ServiceLB honours), so the per-IP limits and the
allow-list of cluster/manifests/edge.py see each client rather than the node; with the TLS mode
acme in effect (edge.tls_choice: TLS_MODE=acme, or auto with public hosts) the Let's Encrypt
resolver (HTTP-01 on `web`) stores acme.json on a small volume. A change makes
k3s's helm controller upgrade Traefik: a few seconds without the edge.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import yaml
from invoke import Context, Exit

from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube.client import kubectl
from desbordante_ops.cluster.manifests.edge import HOST_KEYS, RESOLVER, WEB, host_kind, tls_choice
from desbordante_ops.cluster.manifests.edge import (  # host names no public CA issues for
    PRIVATE_SUFFIXES as PRIVATE_SUFFIXES,
)
from desbordante_ops.core.console import ok, step, warn
from desbordante_ops.core.settings import EnvConfig

TRAEFIK_NAMESPACE = "kube-system"
TRAEFIK_CONFIG = "traefik"
TRAEFIK_UID = 65532  # the chart's podSecurityContext runAsUser / runAsGroup
ACME_DIR = "/data"  # the chart's persistence.path


def traefik_values(cfg: EnvConfig, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Helm values for k3s's Traefik, on top of CURRENT (what the cluster has now).

    Always: the Service keeps client IPs (externalTrafficPolicy Local, which ServiceLB honours),
    so rate limits and the allow-list see each client rather than the node. With acme in
    effect (edge.tls_choice): the Let's Encrypt resolver (HTTP-01 on `web`) storing acme.json
    on a small volume, so certificates survive a restart. Other keys of CURRENT stay, among
    them another environment's resolver (Traefik is shared by stage and prod).
    """
    values = json.loads(json.dumps(current or {}))  # a deep copy
    values.setdefault("service", {}).setdefault("spec", {})["externalTrafficPolicy"] = "Local"
    if tls_choice(cfg).mode == "acme":
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
    """Why Let's Encrypt would not issue for this environment's hosts (empty: no reason, or
    acme is not in effect; TLS_MODE=auto picks acme only for public names)."""
    if tls_choice(cfg).mode != "acme":
        return []
    problems = []
    for host in (getattr(cfg.toolkit, key) for key in HOST_KEYS):
        kind = host_kind(host)
        if kind == "an IP address":
            problems.append(f"{host} is an IP address")
        elif kind is not None:
            problems.append(f"{host} is not a public DNS name")
    return [
        f"Let's Encrypt issues no certificate: {problem}; use the server's public names, or "
        f"TLS_MODE=selfsigned in env/{cfg.name}.env"
        for problem in problems
    ]


def _kubectl(c: Context, cfg: EnvConfig, *args: str) -> Any:
    return c.run(kubectl(cfg, *args), hide=True, warn=True, in_stream=False)


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
    """Apply Traefik's HelmChartConfig for CFG (admins only); True when it changed."""
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
