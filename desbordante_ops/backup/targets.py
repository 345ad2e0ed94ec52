"""The backup target of an environment: the local stack, or a cluster environment."""

from __future__ import annotations

from pathlib import Path

from invoke import Context

from desbordante_ops.backup.archive import DATABASE, UPLOADS
from desbordante_ops.backup.cluster_target import ClusterTarget
from desbordante_ops.backup.flow import Planned, Target
from desbordante_ops.backup.local_target import LocalTarget
from desbordante_ops.backup.schema import SCHEMA_AT_HEAD
from desbordante_ops.cluster import kube, reads
from desbordante_ops.core.plan import Row
from desbordante_ops.core.settings import EnvConfig


def open_target(c: Context, cfg: EnvConfig) -> Target:
    """LocalTarget for `local`, else a ClusterTarget connected to CFG's cluster."""
    if cfg.is_cluster:
        return ClusterTarget(c, cfg, kube.connect(cfg))
    return LocalTarget(c, cfg)


class UnreadCluster:
    """A cluster environment whose cluster cannot be read: a dry run's steps, in general."""

    def __init__(self, cfg: EnvConfig) -> None:
        self.env = cfg.name
        self.namespace = cfg.namespace

    def describe(self) -> str:
        return f"namespace {self.namespace} (cluster not readable)"

    def plan_backup(self, staging: Path) -> list[Row]:
        return [
            ("run", f"pg_dump -Fc in the postgres pod of {self.namespace} > {staging / DATABASE}"),
            (
                "run",
                f"tar of the uploads claim in an api pod (or a helper Job) > {staging / UPLOADS}",
            ),
        ]

    def plan_restore(self, staging: Path, migration: str) -> list[Row]:
        return [
            ("run", f"set api and worker of {self.namespace} to 0 replicas, wait for their pods"),
            ("run", f"pg_restore | psql in the postgres pod < {staging / DATABASE}"),
            ("run", f"tar into the uploads claim in a helper Job < {staging / UPLOADS}"),
            ("run", f"desbordante-service migrate ({migration})") if migration else SCHEMA_AT_HEAD,
            ("run", "set api and worker back to their replicas, wait for the rollouts"),
        ]


def plan_target(c: Context, cfg: EnvConfig) -> tuple[Planned, list[Row]]:
    """The target a dry run reads, and a row when CFG's cluster cannot be read."""
    if not cfg.is_cluster:
        return LocalTarget(c, cfg), []
    k, rows = reads.connect(cfg)
    return (UnreadCluster(cfg) if k is None else ClusterTarget(c, cfg, k)), rows
