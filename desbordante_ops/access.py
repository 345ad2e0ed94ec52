"""`invoke access.grant NAME --role viewer|devops --env ENV`, `access.revoke NAME`, `access.list`.

A person gets a ServiceAccount in the environment's namespace, bound to the built-in ClusterRole
`view` (viewer: read-only, no Secrets) or `admin` (devops: full control of the namespace), and a
kubeconfig file (mode 0600, git-ignored `*.kubeconfig`) holding a time-limited token from the
TokenRequest API. Revoking deletes the binding and the ServiceAccount, which invalidates the
token at once. The token is never printed.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import yaml
from invoke import Exit, task
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops import k8s_names as names
from desbordante_ops import kube
from desbordante_ops.config import REPO_ROOT, load_config
from desbordante_ops.console import ok, print_table, step, warn

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
    return {**kube.MANAGED_BY, USER_LABEL: user, ROLE_LABEL: role}


def ensure_account(core: Any, rbac: Any, namespace: str, user: str, role: str) -> None:
    """ServiceAccount + RoleBinding to ROLES[role] for USER (binding replaced on role change)."""
    name = account_name(user)
    labels = _labels(user, role)
    try:
        core.read_namespaced_service_account(name, namespace)
        core.patch_namespaced_service_account(name, namespace, {"metadata": {"labels": labels}})
    except ApiException as exc:
        if exc.status != 404:
            raise
        meta = k8s.V1ObjectMeta(name=name, labels=labels)
        core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=meta))
    cluster_role = ROLES[role]
    try:
        binding = rbac.read_namespaced_role_binding(name, namespace)
        if binding.role_ref.name == cluster_role:
            return
        rbac.delete_namespaced_role_binding(name, namespace)  # roleRef is immutable
    except ApiException as exc:
        if exc.status != 404:
            raise
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


def write_private(path: Path, text: str) -> None:
    """Write TEXT to PATH readable by the owner only (0600), replacing any older file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


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
    env: str,
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
    namespace = names.namespace_for(env)
    url, ca_data = cluster_endpoint(k, server)
    ensure_account(k.core, k.rbac, namespace, user, role)
    token, expires = request_token(k.core, namespace, user, days)
    config = kubeconfig_for(url, ca_data, namespace, user, token, f"desbordante-{env}")
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
            try:
                delete(name, namespace)
                found = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if found:
            removed.append(namespace)
    return removed


def _kube_env(env: str) -> str:
    if env not in names.KUBE_ENVS:
        raise Exit(f"--env {env}: access is per cluster namespace; use one of {names.KUBE_ENVS}.")
    return env


@task(
    name="grant",
    help={
        "name": "Person's short name, e.g. jane-doe (lower-case, digits, '-').",
        "role": "viewer (read-only, `view`) or devops (full control, `admin`).",
        "env": "Cluster environment: stage or prod.",
        "days": f"Token lifetime in days (default {DEFAULT_DAYS}); grant again to renew.",
        "server": "API URL written into the kubeconfig (default: the one you use).",
        "output": "Kubeconfig file to write (default: <name>-<env>.kubeconfig, mode 0600).",
    },
)
def grant_task(
    c: Any,
    name: str,
    role: str = "viewer",
    env: str = "stage",
    days: int = DEFAULT_DAYS,
    server: str | None = None,
    output: str | None = None,
) -> None:
    """Give a person access to one environment and write their kubeconfig (0600)."""
    env = _kube_env(env)
    account_name(name)
    target = Path(output) if output else REPO_ROOT / f"{name}-{env}.kubeconfig"
    cfg = load_config(env)
    step(f"Granting {role} on {names.namespace_for(env)} to {name}")
    expires = grant(kube.connect(cfg), env, name, role, target, days, server)
    ok(f"kubeconfig for {name} written to {target} (0600, token valid until {expires})")
    warn("hand it over privately (it is a credential); `invoke access.revoke` disables it")


@task(
    name="revoke",
    help={
        "name": "Person's short name used at grant time.",
        "env": "Only this environment (default: every cluster environment).",
    },
)
def revoke_task(c: Any, name: str, env: str | None = None) -> None:
    """Take a person's access away (their kubeconfig stops working at once)."""
    envs = [_kube_env(env)] if env else list(names.KUBE_ENVS)
    account_name(name)
    cfg = load_config(envs[0])
    removed = revoke(kube.connect(cfg), name, [names.namespace_for(e) for e in envs])
    if removed:
        ok(f"access of {name} revoked in {', '.join(removed)}")
    else:
        ok(f"{name} had no access in {', '.join(names.namespace_for(e) for e in envs)}")


@task(name="list", help={"env": "Cluster environment: stage or prod."})
def list_task(c: Any, env: str = "stage") -> None:
    """Show who has access to an environment and with which role."""
    namespace = names.namespace_for(_kube_env(env))
    k = kube.connect(load_config(env))
    accounts = k.core.list_namespaced_service_account(namespace, label_selector=USER_LABEL).items
    rows = [
        (
            a.metadata.labels[USER_LABEL],
            a.metadata.labels.get(ROLE_LABEL, "?"),
            str(a.metadata.creation_timestamp),
        )
        for a in accounts
    ]
    print_table(f"access to {namespace}", ("Name", "Role", "Since"), rows)
