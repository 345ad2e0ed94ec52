"""The stack's passwords as Kubernetes Secrets: created, listed, rotated; never shown.

Values come from `secrets.token_urlsafe` and go to the API server through the `kubernetes`
client only: never printed, logged, written to a file or put on a command line. An existing
Secret is kept. `--rotate NAME` also changes the password where it is stored (PostgreSQL
`ALTER ROLE`, `rabbitmqctl change_password`, both fed on stdin of a pod exec) and restarts the
consumers: PostgreSQL and RabbitMQ read their initial password only on first boot, so a Secret
regenerated on its own would break every connection. How a rotation survives a dropped
connection at any step: cluster/secrets/rotation.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from invoke import Exit

from desbordante_ops.cluster import names
from desbordante_ops.cluster.secrets import rotation
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import (
    ensure_namespace,
    first_running_pod,
    now_iso,
    read_or_none,
)
from desbordante_ops.cluster.kube.podexec import PodExec, pod_exec
from desbordante_ops.cluster.secrets.rotation import ExecFactory, Rotation, pending_password
from desbordante_ops.cluster.secrets.specs import (
    ROTATED_AT,
    SPECS,
    SecretSpec,
    find_spec,
    new_password,
    secret_body,
    secret_values,
)
from desbordante_ops.core.console import ok
from desbordante_ops.core.settings import EnvConfig


def read_secret(core: Any, name: str, namespace: str) -> Any | None:
    """The Secret NAME, or None when it does not exist."""
    return read_or_none(core.read_namespaced_secret, name, namespace)


# What secrets.generate does with one Secret (its dry run lists the same decisions).
CREATE, KEEP, ROTATE, FINISH, RECOVER = "create", "keep", "rotate", "finish", "recover"


def decide(spec: SecretSpec, existing: Any | None, target: SecretSpec | None) -> str:
    """CREATE a missing Secret, KEEP one, ROTATE the target, FINISH the target's unfinished
    rotation, or RECOVER (finish or undo) an unfinished rotation of another Secret."""
    if existing is None:
        return CREATE
    pending = pending_password(existing) is not None
    if spec is target:
        return FINISH if pending and spec.store else ROTATE
    return RECOVER if pending else KEEP


def generate(
    core: Any,
    apps: Any,
    cfg: EnvConfig,
    namespace: str,
    rotate: str | None = None,
    exec_for: ExecFactory | None = None,
) -> list[tuple[str, str]]:
    """Create missing Secrets, keep existing ones, rotate ROTATE; returns (name, action) rows.

    An unfinished rotation found on the way is finished (or undone) first.
    """
    target = find_spec(rotate) if rotate else None
    rows: list[tuple[str, str]] = []
    for spec in SPECS:
        existing = read_secret(core, spec.name, namespace)
        action = decide(spec, existing, target)
        if action == CREATE:
            password = new_password()
            body = secret_body(spec, secret_values(spec, cfg, password), now_iso())
            core.create_namespaced_secret(namespace, body)
            rows.append((spec.name, "created"))
            continue
        if action == KEEP:
            rows.append((spec.name, "kept"))
            continue
        if exec_for is None:
            raise Exit("Rotation needs a cluster connection; run it through the task.")
        job = Rotation(core, apps, cfg, namespace, spec, exec_for)
        finish = rotation.recover if action == RECOVER else rotation.rotate
        rows.append((spec.name, finish(job, existing)))
    return rows


def _age(created: dt.datetime | None, now: dt.datetime) -> str:
    if created is None:
        return "?"
    seconds = int((now - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def listing(core: Any, namespace: str, now: dt.datetime | None = None) -> list[tuple[str, ...]]:
    """(name, keys, age, rotated-at) of every Secret of the stack; values are never read out."""
    now = now or dt.datetime.now(dt.UTC)
    rows: list[tuple[str, ...]] = []
    for spec in SPECS:
        secret = read_secret(core, spec.name, namespace)
        if secret is None:
            rows.append((spec.name, "-", "missing", "-"))
            continue
        keys = ", ".join(sorted((secret.data or {}).keys()))
        annotations = secret.metadata.annotations or {}
        rotated = annotations.get(ROTATED_AT, "-")
        if pending_password(secret) is not None:
            started = annotations.get(rotation.STARTED_AT, "?")
            rotated = f"{rotated} (unfinished rotation since {started}: run secrets.generate)"
        created = secret.metadata.creation_timestamp
        rows.append((spec.name, keys, _age(created, now), rotated))
    return rows


def store_exec_factory(k: Kube, namespace: str) -> ExecFactory:
    """Pod exec into the postgres / rabbitmq pod of NAMESPACE for a rotation."""

    def make(spec: SecretSpec) -> PodExec:
        if spec.store is None:
            raise ValueError(f"{spec.name} has no store to exec into")
        component = names.POSTGRES if spec.store == "postgres" else names.RABBITMQ
        pod = first_running_pod(k.core, namespace, names.selector(component))
        return pod_exec(k, namespace, pod, container=component)

    return make


def ensure_secrets(cfg: EnvConfig, k: Kube, rotate: str | None = None) -> list[tuple[str, str]]:
    """Namespace + Secrets of CFG's environment on cluster K (used by the task and bootstrap)."""
    if rotate:
        find_spec(rotate)
    namespace = cfg.namespace
    if ensure_namespace(k.core, namespace, dict(names.NAMESPACE_LABELS)):
        ok(f"namespace {namespace} created")
    return generate(k.core, k.apps, cfg, namespace, rotate, store_exec_factory(k, namespace))
