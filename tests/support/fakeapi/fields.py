"""Field ownership of the fake API server: managedFields, server-side apply and updates.

A simplified model of kube-apiserver's structured-merge-diff, with the rules the toolkit relies
on (https://kubernetes.io/docs/reference/using-api/server-side-apply/):
- every write records which manager owns which fields in `metadata.managedFields` (FieldsV1
  format: nested `f:<name>` keys); a non-apply write (create/update/patch) by manager U makes U
  own the fields it changed (operation Update), and takes them from the others;
- an apply (PATCH application/apply-patch+yaml) by manager M: M owns exactly the fields of its
  configuration (operation Apply). A field M owned before and no longer sets is removed from
  the object unless another manager owns it too. Setting a field that another manager owns to
  a different value is a conflict (409) unless the apply is forced, which takes the field over;
- `metadata.managedFields` sent explicitly in an update replaces the recorded ownership (how
  kubectl moves client-side-apply ownership to a server-side apply manager).
Simplification: lists are atomic (owned and replaced as a whole; the real server merges lists
keyed by e.g. container name). Status and server-set metadata are never owned.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

Path = tuple[str, ...]
_MISSING = object()
# Metadata the server sets; never part of anybody's fields.
SERVER_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "managedFields",
        "selfLink",
    }
)


def leaves(value: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf of VALUE by path: dicts are walked, anything else (lists too) is a leaf; an
    empty dict is a leaf of its own (`emptyDir: {}`)."""
    if not isinstance(value, dict) or (not value and prefix):
        return {prefix: value}
    found: dict[Path, Any] = {}
    for key, inner in value.items():
        found.update(leaves(inner, (*prefix, key)))
    return found


def owned(obj: dict[str, Any]) -> dict[Path, Any]:
    """The fields of OBJ a manager can own: everything but apiVersion/kind, status and the
    metadata the server sets."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    body.pop("metadata", None)
    if meta:
        body["metadata"] = meta
    return {path: value for path, value in leaves(body).items() if path}


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """PATHS in FieldsV1 form: {"f:spec": {"f:replicas": {}}}."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    """The leaf paths of a FieldsV1 tree (the inverse of to_fields_v1)."""
    paths: set[Path] = set()
    for key, inner in tree.items():
        if not key.startswith("f:"):
            continue  # `.`, `k:{...}`, `v:...`: not produced by this model
        path = (*prefix, key[2:])
        children = from_fields_v1(inner, path) if isinstance(inner, dict) else set()
        paths |= children or {path}
    return paths


def get_path(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def delete_path(obj: dict[str, Any], path: Path) -> None:
    """Remove the leaf at PATH, and the dicts it leaves empty (the top level stays)."""
    parents = [obj]
    for part in path[:-1]:
        inner = parents[-1].get(part)
        if not isinstance(inner, dict):
            return
        parents.append(inner)
    parents[-1].pop(path[-1], None)
    for depth in range(len(parents) - 1, 0, -1):
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def merge(base: Any, overlay: Any) -> Any:
    """OVERLAY merged into BASE: dicts key by key, anything else replaced."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    result = dict(base)
    for key, value in overlay.items():
        result[key] = merge(base.get(key), value)
    return result


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((obj or {}).get("metadata") or {}).get("managedFields") or [])


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _entry(
    manager: str, operation: str, api_version: str, paths: set[Path], time: str | None = None
) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time or _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


def _rebuilt(
    ownership: list[tuple[dict[str, Any], set[Path]]], api_version: str
) -> list[dict[str, Any]]:
    """managedFields entries of OWNERSHIP (entries that own nothing any more are dropped)."""
    return [
        _entry(
            e["manager"], e["operation"], e.get("apiVersion") or api_version, paths, e.get("time")
        )
        for e, paths in ownership
        if paths
    ]


class Conflict(Exception):
    """An apply would change fields other managers own (the 409 message lists them)."""

    def __init__(self, api_version: str, conflicts: list[tuple[Path, list[str]]]) -> None:
        lines = [
            f'conflict with "{manager}" using {api_version}: .{".".join(path)}'
            for path, managers in conflicts
            for manager in managers
        ]
        super().__init__(f"Apply failed with {len(lines)} conflict(s): " + "; ".join(lines))


def apply(
    live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool
) -> dict[str, Any]:
    """The object after MANAGER applies CONFIG to LIVE (None: it is created)."""
    api_version = config.get("apiVersion", "")
    wanted = owned(config)
    if live is None:
        result = copy.deepcopy(config)
        result.setdefault("metadata", {})["managedFields"] = [
            _entry(manager, "Apply", api_version, set(wanted))
        ]
        return result
    ownership = [(e, from_fields_v1(e.get("fieldsV1") or {})) for e in _entries(live)]
    ours = [p for e, p in ownership if e["manager"] == manager and e["operation"] == "Apply"]
    previous = set().union(*ours) if ours else set()
    others = [
        (e, p) for e, p in ownership if not (e["manager"] == manager and e["operation"] == "Apply")
    ]
    have = owned(live)
    conflicts = []
    for path, value in wanted.items():
        if have.get(path, _MISSING) == value:
            continue
        holders = sorted({e["manager"] for e, paths in others if path in paths})
        if holders:
            conflicts.append((path, holders))
    if conflicts and not force:
        raise Conflict(api_version, conflicts)
    result = copy.deepcopy(live)
    for path in previous - set(wanted):
        if not any(path in paths for _, paths in others):
            delete_path(result, path)
    body = {k: v for k, v in config.items() if k not in ("status",)}
    meta = {k: v for k, v in (config.get("metadata") or {}).items() if k not in SERVER_METADATA}
    body["metadata"] = meta
    result = merge(result, body)
    taken = {path for path, _ in conflicts}
    kept = [(e, paths - taken) for e, paths in others]
    ours_now = _entry(manager, "Apply", api_version, set(wanted))
    result["metadata"]["managedFields"] = [*_rebuilt(kept, api_version), ours_now]
    return result


def update(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, sent_managed: bool
) -> dict[str, Any]:
    """NEW (written by a create, update or patch of MANAGER over OLD) with its ownership.

    SENT_MANAGED: the request carried metadata.managedFields, which then replace the record.
    """
    api_version = new.get("apiVersion", "")
    result = copy.deepcopy(new)
    meta = result.setdefault("metadata", {})
    if sent_managed:
        return result
    before, after = owned(old or {}), owned(new)
    changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
    removed = set(before) - set(after)
    ownership = [(e, from_fields_v1(e.get("fieldsV1") or {}) - removed) for e in _entries(old)]
    updated, found = [], False
    for entry, paths in ownership:
        if entry["manager"] == manager and entry["operation"] == "Update":
            updated.append((entry, paths | changed))
            found = True
        else:
            updated.append((entry, paths - changed if entry["manager"] != manager else paths))
    if not found and changed:
        updated.append(({"manager": manager, "operation": "Update"}, changed))
    meta["managedFields"] = _rebuilt(updated, api_version)
    return result
