"""Team access to one environment: ServiceAccount, binding, and a kubeconfig with a token.

A person gets a ServiceAccount in the environment's namespace, bound to the built-in ClusterRole
`view` (viewer: read-only, no Secrets) or `admin` (devops: full control of the namespace), and a
kubeconfig file (mode 0600, git-ignored `*.kubeconfig`) holding a time-limited token from the
TokenRequest API. Revoking deletes the binding and the ServiceAccount, which invalidates the
token at once. The token is never printed.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import yaml
from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster import kube, names
from desbordante_ops.core.console import warn
from desbordante_ops.core.files import write_private

ROLES = {"viewer": "view", "devops": "admin"}
USER_LABEL = "desbordante.io/access-user"
ROLE_LABEL = "desbordante.io/access-role"
DEFAULT_DAYS = 90
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")


def account_name(user: str) -> str:
    """ServiceAccount / RoleBinding name for USER; Exit for names Kubernetes would refuse."""
    if not NAME_RE.match(user):
        raise Exit(f"{user!r}: use lower-case letters, digits and '-' (e.g. jane-doe).")
    return f"access-{user}"


def _labels(user: str, role: str) -> dict[str, str]:
    return {**names.MANAGED_BY, USER_LABEL: user, ROLE_LABEL: role}


def ensure_account(core: Any, rbac: Any, namespace: str, user: str, role: str) -> None:
    """ServiceAccount + RoleBinding to ROLES[role] for USER (binding replaced on role change)."""
    name = account_name(user)
    labels = _labels(user, role)
    patch = {"metadata": {"labels": labels}}
    if not kube.if_exists(core.patch_namespaced_service_account, name, namespace, patch):
        meta = k8s.V1ObjectMeta(name=name, labels=labels)
        core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=meta))
    cluster_role = ROLES[role]
    binding = kube.read_or_none(rbac.read_namespaced_role_binding, name, namespace)
    if binding is not None:
        if binding.role_ref.name == cluster_role:
            return
        rbac.delete_namespaced_role_binding(name, namespace)  # roleRef is immutable
    body = k8s.V1RoleBinding(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        role_ref=k8s.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role
        ),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
    )
    rbac.create_namespaced_role_binding(namespace, body)


def request_token(core: Any, namespace: str, user: str, days: int) -> tuple[str, Any]:
    """A token for USER's ServiceAccount valid DAYS days: (token, expiry)."""
    spec = k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=days * 86400)
    answer = core.create_namespaced_service_account_token(
        account_name(user), namespace, k8s.AuthenticationV1TokenRequest(spec=spec)
    )
    return answer.status.token, answer.status.expiration_timestamp


def kubeconfig_for(
    server: str, ca_data: str, namespace: str, user: str, token: str, cluster: str
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user (token) and one context for NAMESPACE."""
    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": cluster, "user": user, "namespace": namespace}}
        ],
        "current-context": context,
    }


def cluster_endpoint(k: kube.Kube, server: str | None) -> tuple[str, str]:
    """(API server URL, base64 CA bundle) for the kubeconfig being handed out."""
    configuration = k.api_client.configuration
    ca_file = configuration.ssl_ca_cert
    if not ca_file:
        raise Exit("The admin kubeconfig has no CA certificate; cannot build a safe kubeconfig.")
    ca_data = base64.b64encode(Path(ca_file).read_bytes()).decode()
    url = server or configuration.host
    if re.match(r"^https://(127\.|localhost|\[::1\])", url):
        warn(f"the API address is {url}; pass --server https://<public name>:6443 for others")
    return url, ca_data


def grant(
    k: kube.Kube,
    namespace: str,
    user: str,
    role: str,
    output: Path,
    days: int = DEFAULT_DAYS,
    server: str | None = None,
) -> Any:
    """Create the account of USER in ENV and write its kubeconfig to OUTPUT; returns expiry."""
    if role not in ROLES:
        raise Exit(f"--role {role!r}: use one of {', '.join(ROLES)}.")
    if not 1 <= days <= 365:
        raise Exit("--days must be between 1 and 365.")
    url, ca_data = cluster_endpoint(k, server)
    ensure_account(k.core, k.rbac, namespace, user, role)
    token, expires = request_token(k.core, namespace, user, days)
    config = kubeconfig_for(url, ca_data, namespace, user, token, namespace)
    write_private(output, yaml.safe_dump(config, sort_keys=False))
    return expires


def revoke(k: kube.Kube, user: str, namespaces: list[str]) -> list[str]:
    """Delete USER's binding and ServiceAccount in NAMESPACES; returns where something went."""
    name = account_name(user)
    removed: list[str] = []
    for namespace in namespaces:
        found = False
        for delete in (
            k.rbac.delete_namespaced_role_binding,
            k.core.delete_namespaced_service_account,
        ):
            found = kube.if_exists(delete, name, namespace) or found
        if found:
            removed.append(namespace)
    return removed


def accounts(k: kube.Kube, namespace: str) -> list[tuple[str, str, str]]:
    """(name, role, since) of everyone with access to NAMESPACE."""
    items = k.core.list_namespaced_service_account(namespace, label_selector=USER_LABEL).items
    return [
        (
            a.metadata.labels[USER_LABEL],
            a.metadata.labels.get(ROLE_LABEL, "?"),
            str(a.metadata.creation_timestamp),
        )
        for a in items
    ]
