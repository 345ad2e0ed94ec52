"""Which local stack a task works on: processes (default) or containers (`--docker`)."""

from __future__ import annotations

from invoke import Context

from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.local.containers import ContainerStack
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.local.stack import LocalStack


def open_stack(
    c: Context, cfg: EnvConfig, docker: bool = False, image: str | None = None
) -> LocalStack:
    """The local stack of CFG as processes, or with DOCKER as containers of IMAGE."""
    return ContainerStack(c, cfg, image) if docker else ProcessStack(c, cfg)
