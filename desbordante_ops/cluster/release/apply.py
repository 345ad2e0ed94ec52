"""Server-side apply of a release's manifests, prune of what it no longer renders, the diff.

Every object goes to the API server with server-side apply as field manager `desbordante-ops`
(https://kubernetes.io/docs/reference/using-api/server-side-apply/). Before anything is
written, each object is also sent as a dry run (`dryRun=All`): the server checks admission,
RBAC and schema and answers with the object as it would be, so that
- the diff is the live object against that answer, both without the server's bookkeeping
  (managedFields, resourceVersion, generation, uid, timestamps, status, kubectl's
  last-applied annotation): only what changes is shown. A new generated name (the ConfigMap's
  content hash, the migrate Job's spec hash) that replaces a pruned object is diffed against
  that object;
- a field another manager owns with a different value (a hand edit: `kubectl edit`, `kubectl
  scale`) is a conflict the server reports; the plan names the fields and who owns them, and
  the apply takes them over (force), as the release is what an environment runs;
- an object the server refuses (RBAC, validation, an immutable field) stops the run before
  anything is written.
Objects deployed before by `kubectl apply` (client-side, the toolkit's earlier way) carry the
`last-applied-configuration` annotation and a `kubectl-client-side-apply` manager. They are
taken over first, as kubectl's own migration does (csaupgrade): that manager's fields become
ours and the annotation goes, so fields the release stops setting are removed like any other.
Prune: objects of the kinds we render (PRUNE_KINDS) with our instance label, that the release
does not render and that we applied (our Apply manager, or the last-applied annotation of the
client-side apply before): deleted after the apply. Volume claims, Secrets and the namespace
are never candidates; nor is an object anybody else made.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import CONFLICT, NOT_FOUND, describe_error
from desbordante_ops.cluster.kube.objects import now_iso
from desbordante_ops.cluster.kube.resources import (
    FIELD_MANAGER,
    Kind,
    describe,
    kind_named,
    kind_of,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CSA_MANAGERS = ("kubectl-client-side-apply", "kubectl")
# Every namespaced kind the manifests contain that prune may delete and teardown deletes (a
# test checks each rendered kind is here or in NOT_PRUNED), workloads first (their pods go
# with them); the last one comes from a CRD (Traefik): a cluster without it has none.
PRUNE_KINDS: tuple[Kind, ...] = tuple(
    kind_named(kind)
    for kind in (
        "CronJob",
        "Deployment",
        "StatefulSet",
        "Job",
        "Ingress",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "Middleware",
    )
)
# Rendered kinds that prune never deletes, and why.
NOT_PRUNED = {
    "Namespace": "cluster-scoped: created through the API, never applied",
    "PersistentVolumeClaim": "holds data: only `deploy.teardown --purge-data` deletes it",
}
SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
)
DIFF_CONTEXT_LINES = 3
# API groups built into Kubernetes (everything else comes from a CRD).
BUILTIN_GROUPS = frozenset(
    {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "storage.k8s.io"}
)


@dataclass(frozen=True)
class Change:
    """One object of a release: what it is now (LIVE, None: new) and what it would be."""

    doc: dict[str, Any]
    live: dict[str, Any] | None
    preview: dict[str, Any]
    conflicts: str = ""  # the server's 409 message: fields another manager owns
    takeover: bool = False  # deployed by kubectl's client-side apply before

    @property
    def name(self) -> str:
        return describe(self.doc)

    @property
    def changed(self) -> bool:
        return self.live is None or normalized(self.live) != normalized(self.preview)


@dataclass(frozen=True)
class Refusal:
    """What the server would not do (WHAT: `Kind ns/name`, or a listing; STATUS: its HTTP
    status, 0 for no answer)."""

    what: str
    status: int
    reason: str


@dataclass
class Preview:
    """What applying a release would do, read from the cluster (the dry runs of the apply)."""

    changes: list[Change] = field(default_factory=list)
    prunes: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def changed(self) -> list[Change]:
        return [change for change in self.changes if change.changed]

    @property
    def takeovers(self) -> list[Change]:
        return [change for change in self.changes if change.takeover]

    @property
    def conflicts(self) -> list[Change]:
        return [change for change in self.changes if change.conflicts]

    @property
    def any_change(self) -> bool:
        return bool(self.changed or self.prunes)


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """OBJ without what the server keeps for itself: what a person compares."""
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    meta = clean.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    if not annotations:
        meta.pop("annotations", None)
    return clean


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _last_applied(obj: dict[str, Any]) -> bool:
    return LAST_APPLIED in ((obj.get("metadata") or {}).get("annotations") or {})


def _client_side(entry: dict[str, Any]) -> bool:
    """A managedFields entry of kubectl's client-side apply."""
    return entry.get("manager") in CSA_MANAGERS and entry.get("operation") == "Update"


def _ours(entry: dict[str, Any]) -> bool:
    """A managedFields entry of our server-side apply."""
    return entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"


def applied_client_side(obj: dict[str, Any]) -> bool:
    """True when OBJ was deployed by `kubectl apply` (client-side) and is not taken over yet."""
    return _last_applied(obj) or any(_client_side(e) for e in _entries(obj))


def applied_by_us(obj: dict[str, Any]) -> bool:
    """True when OBJ is ours to prune: applied by us, or by the client-side apply before."""
    return any(_ours(e) for e in _entries(obj)) or _last_applied(obj)


def _merge_fields(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_fields(result[key], value)
        else:
            result.setdefault(key, value)
    return result


def taken_over(obj: dict[str, Any]) -> dict[str, Any]:
    """OBJ with the client-side apply's field ownership moved to our Apply manager and its
    last-applied annotation removed (what kubectl's csaupgrade does)."""
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    entries = _entries(new)
    moving = [e for e in entries if _client_side(e) or _ours(e)]
    merged: dict[str, Any] = {}
    for entry in moving:
        merged = _merge_fields(merged, entry.get("fieldsV1") or {})
    annotations = merged.get("f:metadata", {}).get("f:annotations", {})
    annotations.pop(f"f:{LAST_APPLIED}", None)
    ours = {
        "manager": FIELD_MANAGER,
        "operation": "Apply",
        "apiVersion": new["apiVersion"],
        "time": now_iso(),
        "fieldsType": "FieldsV1",
        "fieldsV1": merged,
    }
    meta["managedFields"] = [e for e in entries if e not in moving] + [ours]
    live_annotations = meta.get("annotations") or {}
    live_annotations.pop(LAST_APPLIED, None)
    meta["annotations"] = live_annotations
    return new


def _reason(exc: ApiException) -> str:
    """The server's own message of a refusal (its Status body), else the short error."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, TypeError, AttributeError):
        message = ""
    return " ".join(message.split())[:300] or describe_error(exc)


def preview(
    k: Kube,
    namespace: str,
    docs: list[dict[str, Any]],
    keep: Iterable[str] = (),
    recreate: Iterable[str] = (),
) -> Preview:
    """The dry run of applying DOCS into NAMESPACE: per object the live and the would-be state,
    conflicts and refusals; and what prune would delete (KEEP: more `Kind/name`s the release
    renders and applies later, e.g. the verify Job). RECREATE: `Kind/name`s an earlier step
    deletes (a failed migrate Job), so the apply creates them again. An object of a custom kind
    the cluster does not serve yet counts as new (the prerequisites step waits for its CRD)."""
    found = Preview()
    again = set(recreate)
    for doc in docs:
        kind, meta = kind_of(doc), doc["metadata"]
        if f"{kind.kind}/{meta['name']}" in again:
            found.changes.append(Change(doc, None, doc))
            continue
        try:
            live = k.objects.get(kind, meta["name"], meta.get("namespace", ""))
            takeover = live is not None and applied_client_side(live)
            conflicts = ""
            try:
                answer = k.objects.apply(doc, force=takeover, dry_run=True)
            except ApiException as exc:
                if exc.status != CONFLICT:
                    raise
                conflicts = _reason(exc)
                answer = k.objects.apply(doc, force=True, dry_run=True)
        except ApiException as exc:
            if exc.status == NOT_FOUND and kind.group not in BUILTIN_GROUPS:
                found.changes.append(Change(doc, None, doc))  # its CRD is not served yet
                continue
            found.refusals.append(Refusal(describe(doc), exc.status or 0, _reason(exc)))
            continue
        found.changes.append(Change(doc, live, answer, conflicts, takeover))
    rendered = {f"{d['kind']}/{d['metadata']['name']}" for d in docs} | set(keep)
    selector = f"{names.INSTANCE_LABEL}={namespace}"
    for kind in PRUNE_KINDS:
        try:
            listed = k.objects.list(kind, namespace, selector)
        except ApiException as exc:
            if exc.status == NOT_FOUND:  # a CRD kind this cluster does not serve: none to prune
                continue
            found.refusals.append(
                Refusal(f"the {kind.kind} objects of {namespace}", exc.status or 0, _reason(exc))
            )
            continue
        found.prunes += [
            obj
            for obj in listed
            if f"{kind.kind}/{obj['metadata']['name']}" not in rendered and applied_by_us(obj)
        ]
    return found


def _stem(obj: dict[str, Any]) -> str:
    """What stays the same when a generated name changes: a Job's component, else the name
    without its last `-suffix` (kustomize's content hash)."""
    meta = obj["metadata"]
    component = (meta.get("labels") or {}).get(names.COMPONENT_LABEL)
    if obj["kind"] == "Job" and component:
        return f"Job/{component}"
    return f"{obj['kind']}/{meta['name'].rsplit('-', 1)[0]}"


def _yaml(obj: dict[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(normalized(obj), sort_keys=True).splitlines(keepends=True)


def diff_lines(found: Preview) -> list[str]:
    """The unified diff of every changed object (one replaced under a new generated name is
    compared with the one it replaces), one line per new object and per pruned one."""
    pruned = {_stem(obj): obj for obj in found.prunes}
    lines: list[str] = []
    for change in found.changed:
        before, title = change.live, change.name
        if before is None and _stem(change.doc) in pruned:
            before = pruned.pop(_stem(change.doc))
            title = f"{describe(before)} -> {change.name}"
        if before is None:
            lines.append(f"+ {change.name}: new")
            continue
        text = difflib.unified_diff(
            _yaml(before),
            _yaml(change.preview),
            f"{title} (live)",
            f"{change.name} (after the apply)",
            n=DIFF_CONTEXT_LINES,
        )
        lines += [line.rstrip("\n") for line in text]
    lines += [f"- {describe(obj)}: no longer rendered, deleted by prune" for obj in pruned.values()]
    return lines


def take_over(k: Kube, changes: list[Change]) -> None:
    """Move the client-side apply's ownership of CHANGES' objects to us (fresh reads; a
    concurrent change of one makes the replace fail with 409, and the deploy stops)."""
    for change in changes:
        meta = change.doc["metadata"]
        live = k.objects.get(kind_of(change.doc), meta["name"], meta.get("namespace", ""))
        if live is not None and applied_client_side(live):
            k.objects.replace(taken_over(live))


def apply_all(k: Kube, docs: list[dict[str, Any]]) -> None:
    """Server-side apply of every doc (forcing: the release takes over conflicting fields)."""
    for doc in docs:
        k.objects.apply(doc, force=True)


def prune(k: Kube, objects: list[dict[str, Any]]) -> None:
    """Delete OBJECTS (found by `preview`); already gone is fine."""
    for obj in objects:
        meta = obj["metadata"]
        k.objects.delete(kind_of(obj), meta["name"], meta.get("namespace", ""))
