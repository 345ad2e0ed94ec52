"""The dry runs of `access.grant` and `access.revoke`: which objects they would create,
replace or delete (read from the cluster), and the kubeconfig file grant would write."""

from __future__ import annotations

from pathlib import Path

from desbordante_ops.cluster import kube, reads
from desbordante_ops.cluster.access import (
    DEVOPS_ROLE,
    LEDGER_READER_ROLE,
    ROLES,
    account_name,
    account_objects,
    check_grant,
    cluster_endpoint,
    ledger_binding_name,
)
from desbordante_ops.cluster.releases import SYSTEM_NAMESPACE
from desbordante_ops.core.plan import Row, file_row


def _role(k: kube.Kube, namespace: str, name: str) -> Row:
    _, state = reads.fetch(k.rbac.read_namespaced_role, name, namespace)
    return reads.state_row(state, f"Role {namespace}/{name}", "create", "replace (rules reset)")


def _binding(k: kube.Kube, namespace: str, name: str, ref: tuple[str, str]) -> list[Row]:
    found, state = reads.fetch(k.rbac.read_namespaced_role_binding, name, namespace)
    what = f"RoleBinding {namespace}/{name} -> {ref[0]} {ref[1]}"
    if found is not None and (found.role_ref.kind, found.role_ref.name) != ref:
        was = f"RoleBinding {namespace}/{name} (-> {found.role_ref.kind} {found.role_ref.name})"
        return [("delete", was), ("create", what)]
    return [reads.state_row(state, what, "create", "keep")]


def grant_plan(
    k: kube.Kube | None,
    namespace: str,
    user: str,
    role: str,
    output: Path,
    days: int,
    server: str | None = None,
) -> list[Row]:
    """What `access.grant` would do on cluster K (None: not readable, the steps in general)."""
    check_grant(role, days)
    name = account_name(user)
    account = f"ServiceAccount {namespace}/{name}"
    reader = ledger_binding_name(user, namespace)
    token = ("create", f"token of {account} (TokenRequest, valid {days} days)")
    if k is None:
        url = server or "the API URL of your kubeconfig"
        return [
            ("create or update", f"{account} (role {role})"),
            ("create or keep", f"RoleBinding {namespace}/{name} -> {' '.join(ROLES[role])}"),
            token,
            file_row(output, f"kubeconfig for {url}, namespace {namespace}"),
        ]
    url, _ = cluster_endpoint(k, server)
    _, state = reads.fetch(k.core.read_namespaced_service_account, name, namespace)
    rows = [reads.state_row(state, f"{account} (role {role})", "create", "update labels")]
    if role == "devops":
        rows.append(_role(k, namespace, DEVOPS_ROLE))
        rows += reads.namespace_rows(k, SYSTEM_NAMESPACE)
        rows.append(_role(k, SYSTEM_NAMESPACE, LEDGER_READER_ROLE))
        rows += _binding(k, SYSTEM_NAMESPACE, reader, ("Role", LEDGER_READER_ROLE))
    else:
        _, state = reads.fetch(k.rbac.read_namespaced_role_binding, reader, SYSTEM_NAMESPACE)
        if state != reads.ABSENT:
            what = f"RoleBinding {SYSTEM_NAMESPACE}/{reader} (release ledger read access)"
            rows.append(reads.state_row(state, what, "skip (absent)", "delete"))
    rows += _binding(k, namespace, name, ROLES[role])
    return [*rows, token, file_row(output, f"kubeconfig for {url}, namespace {namespace}")]


def revoke_plan(k: kube.Kube | None, user: str, namespaces: list[str]) -> list[Row]:
    """What `access.revoke` would delete on cluster K in NAMESPACES."""
    name = account_name(user)
    if k is None:
        return [
            ("delete if present", f"RoleBinding and ServiceAccount {namespace}/{name}")
            for namespace in namespaces
        ]
    rows: list[Row] = []
    for namespace in namespaces:
        for obj in account_objects(k, user, namespace):
            _, state = reads.fetch(obj.read, obj.name, obj.namespace)
            what = f"{obj.kind} {obj.namespace}/{obj.name}"
            rows.append(reads.state_row(state, what, "skip (absent)", "delete"))
    return rows
