"""k3s's Traefik, shared by stage and prod: its HelmChartConfig `kube-system/traefik`.

Set once per cluster by a cluster admin's `invoke deploy` or `bootstrap` (a devops kubeconfig
may not write kube-system; it says so and skips; the step: manifests/traefik_config.py): the
Traefik Service keeps client IPs
(externalTrafficPolicy Local, which k3s's ServiceLB honours), so the per-IP limits and the
allow-list of cluster/manifests/edge.py see each client rather than the node; with the TLS mode
acme in effect (edge.tls_choice: TLS_MODE=acme, or auto with public hosts) the Let's Encrypt
resolver (HTTP-01 on `web`) stores acme.json on a small volume. A change makes
k3s's helm controller upgrade Traefik: a few seconds without the edge.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.edge import HOST_KEYS, RESOLVER, WEB, host_kind, tls_choice
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
