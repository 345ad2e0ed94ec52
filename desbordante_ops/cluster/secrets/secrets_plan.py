"""The dry run of `secrets.generate`: per Secret what it would do, read from the cluster.

The decisions are the ones `generate` itself takes (`secrets.decide`); values are never read
out, only whether a Secret exists and whether it holds an unfinished rotation.
"""

from __future__ import annotations

from desbordante_ops.cluster import names, reads
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.secrets.rotation import PENDING_KEY, started_at
from desbordante_ops.cluster.secrets.specs import SPECS, SecretSpec, find_spec, store_of
from desbordante_ops.cluster.secrets.generate import CREATE, FINISH, KEEP, RECOVER, decide
from desbordante_ops.core.plan import Row, unreadable
from desbordante_ops.core.settings import EnvConfig

PROMOTE = "password := the new one, pending-password removed, rotated-at stamped"


def _keys(spec: SecretSpec) -> str:
    if spec.name in (names.FlowerSecret.NAME, names.ApiAuthSecret.NAME):
        return "password, users (bcrypt)"
    return "password"


def _restart(namespace: str, spec: SecretSpec, when: str = "") -> list[Row]:
    if not spec.restart:
        return []
    targets = ", ".join(f"deployment/{name}" for name in spec.restart)
    return [("restart", f"{targets} in {namespace}{when}")]


def _rotation_rows(
    cfg: EnvConfig, k: Kube, spec: SecretSpec, action: str, started: str
) -> list[Row]:
    """The steps of rotating SPEC's Secret (ROTATE, FINISH or RECOVER)."""
    namespace = cfg.namespace
    secret = f"Secret {namespace}/{spec.name}"
    store = store_of(spec, cfg)
    if store is None:
        if action == RECOVER:
            return [("replace", f"{secret}: remove {PENDING_KEY} (unfinished rotation undone)")]
        return [
            ("replace", f"{secret}: new random password (keys {_keys(spec)})"),
            *_restart(namespace, spec),
        ]
    pod = reads.running_pod(k, namespace, spec.store or "")
    where = f"{store.title} (user {store.user}) in {pod}"
    if action == RECOVER:
        return [
            ("exec", f"{where}: ask which password it accepts (rotation started {started})"),
            ("replace", f"{secret}: new one accepted -> {PROMOTE}; else {PENDING_KEY} removed"),
            *_restart(namespace, spec, " (only when the new password is promoted)"),
        ]
    stash = (
        []
        if action == FINISH
        else [("replace", f"{secret}: new random password stashed as {PENDING_KEY}")]
    )
    what = f"the password stashed {started}" if action == FINISH else "the new password"
    return [
        *stash,
        ("exec", f"{where}: set {what} (on stdin)"),
        ("replace", f"{secret}: {PROMOTE}"),
        *_restart(namespace, spec),
    ]


def plan(cfg: EnvConfig, k: Kube | None, rotate: str | None = None) -> list[Row]:
    """What `secrets.generate [--rotate ROTATE]` would do in CFG's namespace on cluster K."""
    target = find_spec(rotate) if rotate else None
    namespace = cfg.namespace
    if k is None:
        return [
            (
                "rotate" if spec is target else f"{CREATE} or {KEEP}",
                f"Secret {namespace}/{spec.name} (created if missing)",
            )
            for spec in SPECS
        ]
    rows = reads.namespace_rows(k, namespace, " (Pod Security: restricted)")
    for spec in SPECS:
        secret = f"Secret {namespace}/{spec.name}"
        existing, state = reads.fetch(k.core.read_namespaced_secret, spec.name, namespace)
        if state not in (reads.ABSENT, reads.PRESENT):
            rows.append(unreadable(secret, state))
            continue
        action = decide(spec, existing, target)
        if action == CREATE:
            rows.append(("create", f"{secret} (keys {_keys(spec)}; new random password)"))
        elif action == KEEP:
            rows.append(("keep", secret))
        else:
            started = f"at {started_at(existing)}"
            rows.extend(_rotation_rows(cfg, k, spec, action, started))
    return rows


def dry_run(cfg: EnvConfig, rotate: str | None = None) -> list[Row]:
    """The plan of `secrets.generate [--rotate ROTATE]`: ROTATE checked first, then the
    cluster read (a row says so when it cannot be)."""
    if rotate:
        find_spec(rotate)
    k, rows = reads.connect(cfg)
    return rows + plan(cfg, k, rotate)
