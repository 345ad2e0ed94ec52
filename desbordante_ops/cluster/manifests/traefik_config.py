"""Applying Traefik's cluster-wide configuration (HelmChartConfig kube-system/traefik).

The values come from cluster/manifests/traefik.py; this reads what the cluster has and builds
the plan step of a deploy or bootstrap. Only a cluster admin may write kube-system: with any
other kubeconfig the row says so and the step is skipped. A cluster without k3s's HelmChartConfig
kind (not k3s's bundled Traefik) is skipped too, with what to configure by hand. A change makes
k3s's helm controller upgrade Traefik: a few seconds without the edge.
"""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import NOT_FOUND
from desbordante_ops.cluster.kube.objects import can_i
from desbordante_ops.cluster.kube.resources import kind_named
from desbordante_ops.cluster.manifests.edge import RESOLVER
from desbordante_ops.cluster.manifests.traefik import (
    TRAEFIK_CONFIG,
    TRAEFIK_NAMESPACE,
    acme_warnings,
    traefik_config,
    traefik_values,
)
from desbordante_ops.core.console import ok, warn
from desbordante_ops.core.plan import Step, note
from desbordante_ops.core.settings import EnvConfig

HELM_GROUP, HELM_VERSION = "helm.cattle.io", "v1"
WHAT = f"Traefik ({TRAEFIK_NAMESPACE}/{TRAEFIK_CONFIG})"


def served(k: Kube) -> bool:
    """True when the cluster has k3s's HelmChartConfig kind."""
    try:
        resources = k.custom.get_api_resources(HELM_GROUP, HELM_VERSION)
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return False
        raise
    return any(r.kind == "HelmChartConfig" for r in resources.resources or [])


def current_values(k: Kube) -> dict[str, Any] | None:
    """The values of the cluster's HelmChartConfig kube-system/traefik (None when absent)."""
    found = k.objects.get(kind_named("HelmChartConfig"), TRAEFIK_CONFIG, TRAEFIK_NAMESPACE)
    if found is None:
        return None
    return yaml.safe_load((found.get("spec") or {}).get("valuesContent") or "") or {}


def traefik_steps(k: Kube, cfg: EnvConfig) -> list[Step]:
    """The step configuring Traefik for CFG, or the row saying why it is skipped or kept."""
    for line in acme_warnings(cfg):
        warn(line)
    if not can_i(k.authorization, "patch", "helmchartconfigs", HELM_GROUP, TRAEFIK_NAMESPACE):
        return [
            note(
                "skip",
                f"{WHAT}: configured cluster-wide in kube-system, which this kubeconfig may not "
                "change; a cluster admin runs `invoke deploy` or `invoke bootstrap` once",
            )
        ]
    if not served(k):
        return [
            note(
                "skip",
                f"{WHAT}: this cluster has no HelmChartConfig (not k3s's bundled Traefik): "
                f"configure your ingress controller yourself (certificate resolver {RESOLVER} "
                "for ACME, client IPs kept for the per-IP limits)",
            )
        ]
    current = current_values(k)
    values = traefik_values(cfg, current)
    if current == values:
        return [note("keep", f"{WHAT}: already configured")]

    def configure() -> None:
        k.objects.apply(traefik_config(values), force=True)
        ok(f"Traefik configured ({TRAEFIK_NAMESPACE}/{TRAEFIK_CONFIG}); it restarts once")

    acme = RESOLVER in (values.get("certificatesResolvers") or {})
    resolver = ", the Let's Encrypt resolver" if acme else ""
    return [
        Step(
            "configure",
            f"{WHAT}: client IPs kept{resolver}; Traefik restarts once",
            configure,
            check=lambda: k.objects.apply(traefik_config(values), force=True, dry_run=True),
        )
    ]
