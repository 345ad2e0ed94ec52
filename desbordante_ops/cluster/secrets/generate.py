"""The stack's passwords as Kubernetes Secrets: created, listed, rotated; never shown.

Values come from `secrets.token_urlsafe` and go to the API server through the `kubernetes`
client only: never printed, logged, written to a file or put on a command line. An existing
Secret is kept. `--rotate NAME` also changes the password where it is stored (PostgreSQL
`ALTER ROLE`, `rabbitmqctl change_password`, both fed on stdin of a pod exec) and restarts the
consumers: PostgreSQL and RabbitMQ read their initial password only on first boot, so a Secret
regenerated on its own would break every connection. How a rotation survives a dropped
connection at any step: cluster/secrets/rotation.py. `generate_plan` reads the cluster once and
returns the steps (core/plan.py): the dry run prints them, the real run executes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import describe_error
from desbordante_ops.cluster.kube.objects import (
    ensure_namespace,
    first_running_pod,
    now_iso,
    read_or_none,
)
from desbordante_ops.cluster.kube.podexec import PodExec, pod_exec
from desbordante_ops.cluster.secrets import rotation
from desbordante_ops.cluster.secrets.rotation import (
    ExecFactory,
    Rotation,
    pending_password,
    rotation_steps,
)
from desbordante_ops.cluster.secrets.specs import (
    ROTATED_AT,
    SPECS,
    SecretSpec,
    find_spec,
    new_password,
    secret_body,
    secret_keys,
    secret_values,
)
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Plan, Step, execute, note, unknown
from desbordante_ops.core.settings import EnvConfig

# What secrets.generate does with one Secret.
CREATE, KEEP, ROTATE, FINISH, RECOVER = "create", "keep", "rotate", "finish", "recover"


def read_secret(core: k8s.CoreV1Api, name: str, namespace: str) -> Any | None:
    """The Secret NAME, or None when it does not exist."""
    return read_or_none(core.read_namespaced_secret, name, namespace)


def decide(spec: SecretSpec, existing: Any | None, target: SecretSpec | None) -> str:
    """CREATE a missing Secret, KEEP one, ROTATE the target, FINISH the target's unfinished
    rotation, or RECOVER (finish or undo) an unfinished rotation of another Secret."""
    if existing is None:
        return CREATE
    pending = pending_password(existing) is not None
    if spec is target:
        return FINISH if pending and spec.store else ROTATE
    return RECOVER if pending else KEEP


def _store_component(spec: SecretSpec) -> str:
    """The component whose pod keeps SPEC's password (a spec with a store)."""
    return names.POSTGRES if spec.store == "postgres" else names.RABBITMQ


def store_exec_factory(k: Kube, namespace: str) -> ExecFactory:
    """Pod exec into the postgres / rabbitmq pod of NAMESPACE for a rotation."""

    def make(spec: SecretSpec) -> PodExec:
        if spec.store is None:
            raise ValueError(f"{spec.name} has no store to exec into")
        component = _store_component(spec)
        pod = first_running_pod(k.core, namespace, names.selector(component))
        return pod_exec(k, namespace, pod, container=component)

    return make


def _store_pod(k: Kube, namespace: str, spec: SecretSpec) -> str:
    """`pod NAME` of the running pod of SPEC's store, else a note why there is none."""
    component = _store_component(spec)
    try:
        return f"pod {first_running_pod(k.core, namespace, names.selector(component))}"
    except ApiException as exc:
        return f"the {component} pod (not readable: {describe_error(exc)})"
    except Exception:  # Exit: none runs
        return f"the {component} pod (none runs now: the real run would stop here)"


def _create(k: Kube, cfg: EnvConfig, spec: SecretSpec) -> Step:
    namespace = cfg.namespace

    def create() -> None:
        body = secret_body(spec, secret_values(spec, cfg, new_password()), now_iso())
        k.core.create_namespaced_secret(namespace, body)
        ok(f"Secret {spec.name} created")

    what = f"Secret {namespace}/{spec.name} (keys {secret_keys(spec)}; new random password)"
    return Step("create", what, create)


def generate_plan(
    cfg: EnvConfig, k: Kube, rotate: str | None = None, exec_for: ExecFactory | None = None
) -> Plan:
    """What `secrets.generate [--rotate ROTATE]` does in CFG's namespace, read from K:
    create missing Secrets, keep existing ones, rotate ROTATE; an unfinished rotation found on
    the way is finished (or undone) first."""
    target = find_spec(rotate) if rotate else None
    namespace = cfg.namespace
    title = f"secrets.generate in {namespace}" + (f" (rotating {rotate})" if rotate else "")
    exec_for = exec_for or store_exec_factory(k, namespace)
    steps: list[Step] = []
    try:
        missing = read_or_none(k.core.read_namespace, namespace) is None
    except ApiException as exc:
        missing = False
        steps.append(unknown(f"namespace {namespace}", describe_error(exc)))
    if missing:
        labels = dict(names.NAMESPACE_LABELS)
        steps.append(
            Step(
                "create",
                f"namespace {namespace} (Pod Security: restricted)",
                lambda: ensure_namespace(k.core, namespace, labels),
            )
        )
    for spec in SPECS:
        secret = f"Secret {namespace}/{spec.name}"
        try:
            existing = None if missing else read_secret(k.core, spec.name, namespace)
        except ApiException as exc:
            steps.append(unknown(secret, describe_error(exc)))
            continue
        action = decide(spec, existing, target)
        if action == CREATE:
            steps.append(_create(k, cfg, spec))
            if spec is target:
                steps.append(note("note", f"{rotate} does not exist yet: created, not rotated"))
        elif action == KEEP:
            steps.append(note("keep", secret))
        else:
            job = Rotation(k.core, k.apps, cfg, namespace, spec, exec_for)
            pod = _store_pod(k, namespace, spec) if spec.store else ""
            steps += rotation_steps(job, existing, action == RECOVER, pod)
    return Plan(title, steps)


def ensure_secrets(cfg: EnvConfig, k: Kube, rotate: str | None = None) -> None:
    """Namespace + Secrets of CFG's environment on cluster K (bootstrap's step, test setup)."""
    execute(generate_plan(cfg, k, rotate))


def run_generate(cfg: EnvConfig, rotate: str | None, dry_run: bool) -> None:
    """`invoke secrets.generate`: --rotate checked first, then the plan read from the cluster."""
    if rotate:
        find_spec(rotate)
    k, why = connect_or_step(cfg)
    title = f"secrets.generate in {cfg.namespace}"
    execute(Plan(title, why) if k is None else generate_plan(cfg, k, rotate), dry_run)


def _age(created: dt.datetime | None, now: dt.datetime) -> str:
    if created is None:
        return "?"
    seconds = int((now - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def listing(
    core: k8s.CoreV1Api, namespace: str, now: dt.datetime | None = None
) -> list[tuple[str, ...]]:
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
