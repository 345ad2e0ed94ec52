"""Rotate one password so that no failure leaves the store and the Secret silently apart.

A password that also lives in a store (PostgreSQL, RabbitMQ) changes in four steps:
1. stash: the new password goes into the same Secret under `pending-password` (pods mount
   only the `password` key, so nobody reads it yet), with the annotation
   `desbordante.io/rotation-started-at`;
2. set it in the store (a pod exec, the password on stdin);
3. promote: `password` := the new one, `pending-password` removed, `rotated-at` stamped;
4. restart the consumers, which read the password at start.
Every Secret write is a replace carrying the resourceVersion that was read, so two rotations
at once cannot overwrite each other. A failure at any step ends in one line saying what state
the store and the Secret are in and what to run next. A later run of `secrets.generate`
finds the `pending-password` key first: with `--rotate` of that Secret it sets the stashed
password again (setting needs no old password) and promotes it; otherwise it asks the store
which password it accepts and promotes (store has the new one) or drops the pending one
(store still has the old one). The Flower password lives only in its Secret: one write.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube.errors import TRANSPORT_ERRORS, describe_error
from desbordante_ops.cluster.kube.objects import now_iso, restart_workloads
from desbordante_ops.cluster.kube.podexec import ExecFailed, PodExec
from desbordante_ops.cluster.secrets.specs import (
    PASSWORD_KEY,
    ROTATED_AT,
    SecretSpec,
    decode,
    encode,
    new_password,
    secret_keys,
    secret_values,
    store_of,
)
from desbordante_ops.cluster.secrets.stores import Store, StoreError, accepted, set_password
from desbordante_ops.core.console import ok, warn
from desbordante_ops.core.plan import Step
from desbordante_ops.core.settings import EnvConfig

PENDING_KEY = "pending-password"
STARTED_AT = "desbordante.io/rotation-started-at"
PROMOTED = "password := the new one, pending-password removed, rotated-at stamped"
T = TypeVar("T")

# Secret spec -> a function running argv (with stdin) in the pod of the spec's store.
ExecFactory = Callable[[SecretSpec], PodExec]


@dataclass(frozen=True)
class Rotation:
    """One Secret of one namespace being rotated, and how to reach the API and its store."""

    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    cfg: EnvConfig
    namespace: str
    spec: SecretSpec
    exec_for: ExecFactory

    @property
    def rerun(self) -> str:
        return f"`invoke secrets.generate --env {self.cfg.name} --rotate {self.spec.alias}`"

    @property
    def kept_pending(self) -> str:
        return f"the new password is kept in Secret {self.spec.name} as {PENDING_KEY}"


def pending_password(secret: Any) -> str | None:
    """The stashed new password of an unfinished rotation, None when there is none."""
    return decode(secret, PENDING_KEY)


def _api(call: Callable[[], T], failure: str) -> T:
    """CALL(); on a transport/API error Exit(FAILURE with {err} filled in)."""
    try:
        return call()
    except TRANSPORT_ERRORS as exc:
        raise Exit(failure.format(err=describe_error(exc))) from None


def _replace(
    r: Rotation, secret: Any, data: dict[str, str | None], annotations: dict[str, str | None]
) -> Any:
    """Write SECRET back with DATA/ANNOTATIONS changed (None removes a key), optimistically.

    SECRET itself is left as it was read (a failed write changes nothing the caller holds).
    """
    secret = copy.deepcopy(secret)
    stored = dict(secret.data or {})
    notes = dict(secret.metadata.annotations or {})
    for target, changes, codec in ((stored, data, encode), (notes, annotations, str)):
        for key, value in changes.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = codec(value)
    secret.data, secret.metadata.annotations = stored, notes
    return r.core.replace_namespaced_secret(r.spec.name, r.namespace, secret)


def _exec(r: Rotation, state: str) -> PodExec:
    """The PodExec into SPEC's store; Exit naming STATE when the pod cannot be reached."""
    try:
        return r.exec_for(r.spec)
    except Exit as exc:
        raise Exit(f"{str(exc.message).rstrip('.')}; {state}.") from None
    except TRANSPORT_ERRORS as exc:
        reason = describe_error(exc)
        raise Exit(f"Cannot find the {r.spec.store} pod ({reason}); {state}.") from None


def _restart(r: Rotation, store: Store | None) -> None:
    """Step 4: restart the consumers, which read the password at start."""
    try:
        restarted = restart_workloads(r.apps, r.namespace, deployments=r.spec.restart)
    except TRANSPORT_ERRORS as exc:
        targets = " ".join(f"deployment/{name}" for name in r.spec.restart)
        where = f"{store.title} and " if store else ""
        raise Exit(
            f"The new {r.spec.alias} password is in {where}Secret {r.spec.name}, "
            f"but restarting its consumers failed ({describe_error(exc)}): run "
            f"`kubectl -n {r.namespace} rollout restart {targets}`."
        ) from None
    if restarted:
        ok(f"{r.spec.alias}: restarted {', '.join(restarted)}")


def _promote(r: Rotation, store: Store | None, secret: Any, password: str) -> None:
    """Step 3: PASSWORD becomes the Secret's value (the pending one dropped), rotated-at."""
    where = f"{store.title} has the NEW password; " if store else ""
    failure = (
        f"{where}updating Secret {r.spec.name} failed ({{err}}), so it may still hold the old "
        f"one: run {r.rerun} again to finish."
    )
    values: dict[str, str | None] = {**secret_values(r.spec, r.cfg, password), PENDING_KEY: None}
    annotations: dict[str, str | None] = {STARTED_AT: None, ROTATED_AT: now_iso()}
    _api(lambda: _replace(r, secret, values, annotations), failure)
    ok(f"{r.spec.alias}: rotated")


def _drop_pending(r: Rotation, secret: Any, store: Store) -> None:
    failure = (
        f"{store.title} still has the password of Secret {r.spec.name}, but removing its "
        f"{PENDING_KEY} failed ({{err}}): harmless; the next `invoke secrets.generate --env "
        f"{r.cfg.name}` removes it."
    )
    _api(lambda: _replace(r, secret, {PENDING_KEY: None}, {STARTED_AT: None}), failure)


def _which(r: Rotation, store: Store, run: PodExec, secret: Any, new: str, cause: str) -> str:
    """ "current" / "pending" / "neither": the password STORE accepts; Exit when unknown.

    CAUSE: why we ask (the error of an interrupted set), "" when recovering an earlier run.
    """
    current = decode(secret, PASSWORD_KEY) or ""
    try:
        verdict = accepted(store, {"current": current, "pending": new}, run)
    except (ExecFailed, StoreError) as exc:
        check = "" if str(exc) == cause else f" ({exc})"
        state = (
            f"Setting the new {r.spec.alias} password in {store.title} was interrupted "
            f"({cause}) and asking which one it has now failed too{check}"
            if cause
            else f"Cannot tell which password {store.title} has ({exc})"
        )
        raise Exit(
            f"{state}; {r.kept_pending}: run {r.rerun} again to finish once the {store.kind} "
            "pod is reachable."
        ) from None
    return verdict or "neither"


@dataclass
class _Progress:
    """What the steps of one rotation hand on: the Secret as last written, the new password,
    the exec into the store, and (recovering) which password the store accepts."""

    secret: Any
    password: str = ""
    run: PodExec | None = None
    verdict: str = ""


def _connect(r: Rotation, p: _Progress, state: str) -> PodExec:
    if p.run is None:
        p.run = _exec(r, state)
    return p.run


def _set_in_store(r: Rotation, store: Store, p: _Progress) -> None:
    """Step 2: set the stashed password in STORE; on a failure ask which one it has now."""
    run = _connect(r, p, f"nothing was changed; {r.kept_pending}")
    try:
        set_password(store, p.password, run)
    except (ExecFailed, StoreError) as exc:
        verdict = _which(r, store, run, p.secret, p.password, str(exc))
        failed = f"Setting the new {r.spec.alias} password in {store.title} failed ({exc})"
        if verdict == "pending":
            warn(f"{failed}, but it has the new password anyway; finishing the rotation.")
            return
        if verdict == "current":
            _drop_pending(r, p.secret, store)
            raise Exit(f"{failed}; it still has the old one, so nothing was changed.") from None
        raise Exit(
            f"{failed} and it accepts neither the old nor the new one; {r.kept_pending}: run "
            f"{r.rerun} again."
        ) from None


def _stash(r: Rotation, p: _Progress) -> None:
    """Step 1: the new password into the Secret as pending-password (nobody reads it yet)."""
    _connect(r, p, "nothing was changed")  # no stash when the store cannot be reached
    p.password = new_password()
    p.secret = _api(
        lambda: _replace(r, p.secret, {PENDING_KEY: p.password}, {STARTED_AT: now_iso()}),
        f"Saving the new password in Secret {r.spec.name} failed ({{err}}); nothing was "
        f"changed: run {r.rerun} again.",
    )


def _ask(r: Rotation, store: Store, p: _Progress) -> None:
    """Recovering: which password the store accepts (the current or the pending one)."""
    run = _connect(r, p, f"an unfinished rotation is pending; {r.kept_pending}")
    p.verdict = _which(r, store, run, p.secret, p.password, "")
    if p.verdict == "neither":
        raise Exit(
            f"{store.title} accepts neither the password of Secret {r.spec.name} nor the "
            f"pending new one: run {r.rerun} to set the new one in both."
        )


def _settle(r: Rotation, store: Store, p: _Progress) -> None:
    """Recovering: promote the pending password the store has, or drop the one it has not."""
    if p.verdict == "pending":
        _promote(r, store, p.secret, p.password)
        ok(f"{r.spec.alias}: unfinished rotation finished")
    else:
        _drop_pending(r, p.secret, store)
        ok(f"{r.spec.alias}: unfinished rotation undone (the store kept the old password)")


def rotation_steps(r: Rotation, secret: Any, recovering: bool, pod: str) -> list[Step]:
    """The steps of rotating R's Secret (read as SECRET), finishing an unfinished rotation
    of it, or (RECOVERING) settling an unfinished rotation of another Secret. POD: where the
    store's commands run, as the plan shows it."""
    store = store_of(r.spec, r.cfg)
    name = f"Secret {r.namespace}/{r.spec.name}"
    earlier = pending_password(secret)
    p = _Progress(secret, earlier or "")
    consumers = ", ".join(f"deployment/{n}" for n in r.spec.restart)
    restart = (
        [Step("restart", f"{consumers} in {r.namespace}", lambda: _restart(r, store))]
        if r.spec.restart
        else []
    )
    if store is None:
        if recovering:
            undo = f"{name}: remove {PENDING_KEY} (unfinished rotation undone)"
            return [Step("replace", undo, lambda: _undo(r, p))]
        promote = f"{name}: new random password (keys {secret_keys(r.spec)})"
        return [
            Step("replace", promote, lambda: _promote(r, None, p.secret, new_password())),
            *restart,
        ]
    where = f"{store.title} (user {store.user}) in {pod}"
    started = f"at {started_at(secret)}"
    if recovering:
        return [
            Step(
                "exec",
                f"{where}: ask which password it accepts (rotation started {started})",
                lambda: _ask(r, store, p),
            ),
            Step(
                "replace",
                f"{name}: new one accepted -> {PROMOTED}; else {PENDING_KEY} removed",
                lambda: _settle(r, store, p),
            ),
            *(
                [
                    Step(
                        s.action,
                        f"{s.target} (only when the new password is promoted)",
                        lambda: _restart(r, store) if p.verdict == "pending" else None,
                    )
                    for s in restart
                ]
            ),
        ]
    stash = (
        []
        if earlier is not None
        else [
            Step(
                "replace",
                f"{name}: new random password stashed as {PENDING_KEY}",
                lambda: _stash(r, p),
            )
        ]
    )
    what = f"the password stashed {started}" if earlier is not None else "the new password"
    return [
        *stash,
        Step("exec", f"{where}: set {what} (on stdin)", lambda: _set_in_store(r, store, p)),
        Step("replace", f"{name}: {PROMOTED}", lambda: _promote(r, store, p.secret, p.password)),
        *restart,
    ]


def _undo(r: Rotation, p: _Progress) -> None:
    _api(
        lambda: _replace(r, p.secret, {PENDING_KEY: None}, {STARTED_AT: None}),
        f"Removing {PENDING_KEY} from Secret {r.spec.name} failed ({{err}}).",
    )


def started_at(secret: Any) -> str:
    """When SECRET's unfinished rotation started (its annotation)."""
    return str((secret.metadata.annotations or {}).get(STARTED_AT, "an unknown time"))
