"""Team access to one environment: ServiceAccount, binding, and a kubeconfig with a token.

A person gets a ServiceAccount in the environment's namespace and a kubeconfig file (mode 0600,
git-ignored `*.kubeconfig`) holding a time-limited token from the TokenRequest API:
- viewer: bound to the built-in ClusterRole `view` (read-only, no Secrets);
- devops: bound to the Role `desbordante-devops` of that namespace (DEVOPS_RULES: what deploy,
  secrets and logs need, nothing cluster-scoped, no RBAC), plus read access to the release
  ledger (ConfigMap `desbordante-releases` in `desbordante-system`) and nothing else there, so
  devops can deploy but never record a release for prod.
Revoking deletes the bindings and the ServiceAccount, which invalidates the token at once. The
token is never printed.
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
from desbordante_ops.cluster.releases import LEDGER, SYSTEM_NAMESPACE
from desbordante_ops.core.console import warn
from desbordante_ops.core.files import write_private

DEVOPS_ROLE = "desbordante-devops"
LEDGER_READER_ROLE = "desbordante-release-reader"
# role -> (roleRef kind, roleRef name) of the binding in the environment's namespace.
ROLES = {"viewer": ("ClusterRole", "view"), "devops": ("Role", DEVOPS_ROLE)}
USER_LABEL = "desbordante.io/access-user"
ROLE_LABEL = "desbordante.io/access-role"
DEFAULT_DAYS = 90
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
RBAC_GROUP = "rbac.authorization.k8s.io"
WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]
READ = ["get", "list", "watch"]
# The Role `desbordante-devops`: write access to every kind the rendered overlays contain
# (tests/manifests/test_devops_role.py renders both overlays and checks this both ways) plus
# Secrets (secrets.generate, rotation); read access to what deploy waits on and explains
# (pods, events, logs); pods/exec for password rotation; `get` of its own Namespace object
# (RBAC limits a Role's `namespaces` rule to the namespace the Role is in; secrets.generate
# reads it); the deploy lock's Lease. A Role cannot grant anything cluster-scoped (creating
# namespaces, nodes, CRDs); there is no RBAC access, no pods/status (kubelet's image IDs), no
# serviceaccounts/token.
DEVOPS_RULES: list[tuple[str, tuple[str, ...], list[str]]] = [
    ("", ("configmaps", "persistentvolumeclaims", "secrets", "services"), WRITE),
    ("", ("events", "pods"), READ),
    ("", ("namespaces",), ["get"]),
    ("", ("pods/log",), ["get"]),
    ("", ("pods/exec",), ["get", "create"]),
    ("apps", ("deployments", "statefulsets"), WRITE),
    ("apps", ("replicasets",), READ),  # deploy finds the pods of a Deployment's new revision
    ("batch", ("cronjobs", "jobs"), WRITE),
    ("networking.k8s.io", ("ingresses", "networkpolicies"), WRITE),
    ("policy", ("poddisruptionbudgets",), WRITE),
    ("traefik.io", ("middlewares",), WRITE),
    # The deploy lock (cluster/lock.py): a person's deploy and auto-update never interleave.
    ("coordination.k8s.io", ("leases",), ["get", "create", "update"]),
]


def account_name(user: str) -> str:
    """ServiceAccount / RoleBinding name for USER; Exit for names Kubernetes would refuse."""
    if not NAME_RE.match(user):
        raise Exit(f"{user!r}: use lower-case letters, digits and '-' (e.g. jane-doe).")
    return f"access-{user}"


def _labels(user: str, role: str) -> dict[str, str]:
    return {**names.MANAGED_BY, USER_LABEL: user, ROLE_LABEL: role}


def ledger_binding_name(user: str, namespace: str) -> str:
    """The RoleBinding in SYSTEM_NAMESPACE that lets USER of NAMESPACE read the ledger."""
    return f"{account_name(user)}-{namespace}"


def _policy_rules(rules: list[tuple[str, tuple[str, ...], list[str]]]) -> list[Any]:
    return [
        k8s.V1PolicyRule(api_groups=[group], resources=list(resources), verbs=list(verbs))
        for group, resources, verbs in rules
    ]


def ensure_role(rbac: Any, namespace: str, name: str, rules: list[Any]) -> None:
    """Role NAME in NAMESPACE with exactly RULES (created, or replaced when it exists)."""
    body = k8s.V1Role(metadata=k8s.V1ObjectMeta(name=name, labels=names.MANAGED_BY), rules=rules)
    if kube.read_or_none(rbac.read_namespaced_role, name, namespace) is None:
        rbac.create_namespaced_role(namespace, body)
    else:
        rbac.replace_namespaced_role(name, namespace, body)


def ensure_binding(
    rbac: Any, namespace: str, name: str, ref: tuple[str, str], subject: Any, labels: dict[str, str]
) -> None:
    """RoleBinding NAME of SUBJECT to REF (kind, name); replaced when it points elsewhere."""
    binding = kube.read_or_none(rbac.read_namespaced_role_binding, name, namespace)
    if binding is not None:
        if (binding.role_ref.kind, binding.role_ref.name) == ref:
            return
        rbac.delete_namespaced_role_binding(name, namespace)  # roleRef is immutable
    body = k8s.V1RoleBinding(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        role_ref=k8s.V1RoleRef(api_group=RBAC_GROUP, kind=ref[0], name=ref[1]),
        subjects=[subject],
    )
    rbac.create_namespaced_role_binding(namespace, body)


def ensure_account(core: Any, rbac: Any, namespace: str, user: str, role: str) -> None:
    """ServiceAccount + RoleBinding to ROLES[role] for USER (binding replaced on role change);
    devops also gets its Role and read access to the release ledger."""
    name = account_name(user)
    labels = _labels(user, role)
    patch = {"metadata": {"labels": labels}}
    if not kube.if_exists(core.patch_namespaced_service_account, name, namespace, patch):
        meta = k8s.V1ObjectMeta(name=name, labels=labels)
        core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=meta))
    subject = k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)
    reader = ledger_binding_name(user, namespace)
    if role == "devops":
        ensure_role(rbac, namespace, DEVOPS_ROLE, _policy_rules(DEVOPS_RULES))
        kube.ensure_namespace(core, SYSTEM_NAMESPACE, names.NAMESPACE_LABELS)
        ledger_rule = k8s.V1PolicyRule(
            api_groups=[""], resources=["configmaps"], resource_names=[LEDGER], verbs=["get"]
        )
        ensure_role(rbac, SYSTEM_NAMESPACE, LEDGER_READER_ROLE, [ledger_rule])
        ensure_binding(
            rbac, SYSTEM_NAMESPACE, reader, ("Role", LEDGER_READER_ROLE), subject, labels
        )
    else:
        kube.if_exists(rbac.delete_namespaced_role_binding, reader, SYSTEM_NAMESPACE)
    ensure_binding(rbac, namespace, name, ROLES[role], subject, labels)


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
    """Delete USER's bindings and ServiceAccount in NAMESPACES; returns where something went."""
    name = account_name(user)
    removed: list[str] = []
    for namespace in namespaces:
        found = False
        for delete, obj, where in (
            (k.rbac.delete_namespaced_role_binding, name, namespace),
            (
                k.rbac.delete_namespaced_role_binding,
                ledger_binding_name(user, namespace),
                SYSTEM_NAMESPACE,
            ),
            (k.core.delete_namespaced_service_account, name, namespace),
        ):
            found = kube.if_exists(delete, obj, where) or found
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
