"""The backup target of an environment: the local stack, or a cluster environment."""

from __future__ import annotations

from invoke import Context

from desbordante_ops.backup.cluster import ClusterTarget
from desbordante_ops.backup.flow import Target
from desbordante_ops.backup.local import LocalTarget
from desbordante_ops.cluster import kube
from desbordante_ops.core.settings import EnvConfig


def open_target(c: Context, cfg: EnvConfig) -> Target:
    """LocalTarget for `local`, else a ClusterTarget connected to CFG's cluster."""
    if cfg.is_cluster:
        return ClusterTarget(c, cfg, kube.connect(cfg))
    return LocalTarget(c, cfg)
