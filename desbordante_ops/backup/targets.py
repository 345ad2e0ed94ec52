"""The backup target of an environment, as its plans read it: the local stack, a cluster
environment, or (its cluster not readable) an `Unread` one whose plans say why."""

from __future__ import annotations

from invoke import Context

from desbordante_ops.backup.cluster_target import ClusterTarget
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.backup.protocol import Source, Unread
from desbordante_ops.cluster.kube import client
from desbordante_ops.core.plan import read_or_step
from desbordante_ops.core.settings import EnvConfig


def read_target(c: Context, cfg: EnvConfig) -> Source:
    """LocalTarget for `local`, else a ClusterTarget connected to CFG's cluster, or Unread
    with the row saying why the cluster cannot be read (the real run stops there)."""
    if not cfg.is_cluster:
        local = LocalTarget(c, cfg)
        _, missing = read_or_step(local.reach, f"PostgreSQL of {cfg.name}")
        if missing:
            return Unread(cfg.name, local.describe(), missing[0])
        return local
    k, missing = read_or_step(lambda: client.connect(cfg), f"the cluster of {cfg.name}")
    if k is None:
        return Unread(cfg.name, f"namespace {cfg.namespace} (cluster not readable)", missing[0])
    return ClusterTarget(c, cfg, k)
