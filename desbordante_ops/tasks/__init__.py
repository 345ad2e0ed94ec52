"""The Invoke tasks: one thin module per area of `invoke --list`; `namespace()` assembles them."""

from __future__ import annotations

from invoke import Collection

from desbordante_ops.tasks import (
    access,
    autoupdate,
    backup,
    bootstrap,
    config,
    deploy,
    images,
    k3s,
    local,
    releases,
    secrets,
    verify,
)


def namespace() -> Collection:
    """Root tasks (local stack, config, doctor, backup, restore, verify) plus one collection per
    area."""
    ns = Collection(
        local.up,
        local.down,
        local.status,
        local.logs,
        config.config,
        config.doctor,
        backup.backup,
        backup.restore,
        verify.verify,
    )
    for module in (images, k3s, secrets, deploy, releases, autoupdate, access, bootstrap):
        ns.add_collection(Collection.from_module(module))
    return ns
