"""Team access to one environment: ServiceAccount, binding, and a kubeconfig with a token.

A person gets a ServiceAccount in the environment's namespace and a kubeconfig file (mode 0600,
git-ignored `*.kubeconfig`) holding a time-limited token from the TokenRequest API:
- viewer: bound to the built-in ClusterRole `view` (read-only, no Secrets);
- devops: bound to the Role `desbordante-devops` of that namespace (DEVOPS_RULES: what deploy,
  secrets and logs need, nothing cluster-scoped, no RBAC), plus read access to the release
  ledger (ConfigMap `desbordante-releases` in `desbordante-system`) and nothing else there, so
  devops can deploy but never record a release for prod.
Revoking deletes the bindings and the ServiceAccount, which invalidates the token at once. The
token is never printed. Both are plans (core/plan.py), read from the cluster once: the dry run
prints the steps the real run executes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import TRANSPORT_ERRORS, describe_error
from desbordante_ops.cluster.kube.objects import ensure_namespace, if_exists, read_or_none
from desbordante_ops.cluster.release.ledger import LEDGER, SYSTEM_NAMESPACE
from desbordante_ops.core.console import ok, warn
from desbordante_ops.core.files import write_private
from desbordante_ops.core.plan import Plan, Step, execute, file_step, note, unknown
from desbordante_ops.core.settings import EnvConfig

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
    # The deploy lock (cluster/release/lock.py): a person's deploy and auto-update never interleave.
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
    if read_or_none(rbac.read_namespaced_role, name, namespace) is None:
        rbac.create_namespaced_role(namespace, body)
    else:
        rbac.replace_namespaced_role(name, namespace, body)


def ensure_binding(
    rbac: Any, namespace: str, name: str, ref: tuple[str, str], subject: Any, labels: dict[str, str]
) -> None:
    """RoleBinding NAME of SUBJECT to REF (kind, name); replaced when it points elsewhere."""
    binding = read_or_none(rbac.read_namespaced_role_binding, name, namespace)
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


def cluster_endpoint(k: Kube, server: str | None) -> tuple[str, str]:
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


def check_grant(role: str, days: int) -> None:
    """Exit unless ROLE is one of ROLES and DAYS a token lifetime we hand out."""
    if role not in ROLES:
        raise Exit(f"--role {role!r}: use one of {', '.join(ROLES)}.")
    if not 1 <= days <= 365:
        raise Exit("--days must be between 1 and 365.")


class AccountObject(NamedTuple):
    """One object `grant` makes for a person, and how to read and delete it."""

    kind: str
    name: str
    namespace: str
    read: Callable[..., Any]
    delete: Callable[..., Any]


def account_objects(k: Kube, user: str, namespace: str) -> list[AccountObject]:
    """What USER's access to NAMESPACE consists of, in the order revoke deletes it."""
    name = account_name(user)
    rbac, core = k.rbac, k.core
    binding = (rbac.read_namespaced_role_binding, rbac.delete_namespaced_role_binding)
    return [
        AccountObject("RoleBinding", name, namespace, *binding),
        AccountObject(
            "RoleBinding", ledger_binding_name(user, namespace), SYSTEM_NAMESPACE, *binding
        ),
        AccountObject(
            "ServiceAccount",
            name,
            namespace,
            core.read_namespaced_service_account,
            core.delete_namespaced_service_account,
        ),
    ]


def accounts(k: Kube, namespace: str) -> list[tuple[str, str, str]]:
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


def _fetch(read: Callable[..., Any], *args: Any) -> tuple[Any | None, str]:
    """(object, "") / (None, "") when absent / (None, why it could not be read)."""
    try:
        return read_or_none(read, *args), ""
    except TRANSPORT_ERRORS as exc:
        return None, describe_error(exc)


def _role_step(k: Kube, namespace: str, name: str, rules: list[Any]) -> Step:
    what = f"Role {namespace}/{name}"
    found, why = _fetch(k.rbac.read_namespaced_role, name, namespace)
    if why:
        return unknown(what, why)

    def write() -> None:
        body = k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name=name, labels=names.MANAGED_BY), rules=rules
        )
        if found is None:
            k.rbac.create_namespaced_role(namespace, body)
        else:
            k.rbac.replace_namespaced_role(name, namespace, body)

    return Step("create" if found is None else "replace (rules reset)", what, write)


def _binding_steps(
    k: Kube, namespace: str, name: str, ref: tuple[str, str], subject: Any, labels: dict[str, str]
) -> list[Step]:
    """The RoleBinding NAME of SUBJECT to REF: kept, created, or (roleRef is immutable)
    deleted and created again when it points elsewhere."""
    what = f"RoleBinding {namespace}/{name} -> {ref[0]} {ref[1]}"
    found, why = _fetch(k.rbac.read_namespaced_role_binding, name, namespace)
    if why:
        return [unknown(what, why)]
    if found is not None and (found.role_ref.kind, found.role_ref.name) == ref:
        return [note("keep", what)]
    body = k8s.V1RoleBinding(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        role_ref=k8s.V1RoleRef(api_group=RBAC_GROUP, kind=ref[0], name=ref[1]),
        subjects=[subject],
    )
    steps = []
    if found is not None:
        was = f"RoleBinding {namespace}/{name} (-> {found.role_ref.kind} {found.role_ref.name})"
        steps.append(
            Step("delete", was, lambda: k.rbac.delete_namespaced_role_binding(name, namespace))
        )
    steps.append(
        Step("create", what, lambda: k.rbac.create_namespaced_role_binding(namespace, body))
    )
    return steps


@dataclass
class _Token:
    value: str = field(default="", repr=False)
    expires: Any = None


def grant_plan(
    k: Kube,
    namespace: str,
    user: str,
    role: str,
    output: Path,
    days: int = DEFAULT_DAYS,
    server: str | None = None,
) -> Plan:
    """Everything `access.grant` makes for USER as ROLE in NAMESPACE, read from cluster K:
    the ServiceAccount, the Role(s) and bindings, a token and the kubeconfig (0600)."""
    check_grant(role, days)
    url, ca_data = cluster_endpoint(k, server)
    name = account_name(user)
    labels = _labels(user, role)
    account = f"ServiceAccount {namespace}/{name}"
    subject = k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)
    reader = ledger_binding_name(user, namespace)
    existing, why = _fetch(k.core.read_namespaced_service_account, name, namespace)

    def account_write() -> None:
        patch = {"metadata": {"labels": labels}}
        if not if_exists(k.core.patch_namespaced_service_account, name, namespace, patch):
            meta = k8s.V1ObjectMeta(name=name, labels=labels)
            k.core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=meta))

    steps: list[Step] = [
        unknown(account, why)
        if why
        else Step(
            "create" if existing is None else "update labels",
            f"{account} (role {role})",
            account_write,
        )
    ]
    if role == "devops":
        steps.append(_role_step(k, namespace, DEVOPS_ROLE, _policy_rules(DEVOPS_RULES)))
        system, why = _fetch(k.core.read_namespace, SYSTEM_NAMESPACE)
        if why:
            steps.append(unknown(f"namespace {SYSTEM_NAMESPACE}", why))
        elif system is None:
            steps.append(
                Step(
                    "create",
                    f"namespace {SYSTEM_NAMESPACE}",
                    lambda: ensure_namespace(k.core, SYSTEM_NAMESPACE, names.NAMESPACE_LABELS),
                )
            )
        ledger_rule = k8s.V1PolicyRule(
            api_groups=[""], resources=["configmaps"], resource_names=[LEDGER], verbs=["get"]
        )
        steps.append(_role_step(k, SYSTEM_NAMESPACE, LEDGER_READER_ROLE, [ledger_rule]))
        steps += _binding_steps(
            k, SYSTEM_NAMESPACE, reader, ("Role", LEDGER_READER_ROLE), subject, labels
        )
    else:
        found, why = _fetch(k.rbac.read_namespaced_role_binding, reader, SYSTEM_NAMESPACE)
        what = f"RoleBinding {SYSTEM_NAMESPACE}/{reader} (release ledger read access)"
        if why:
            steps.append(unknown(what, why))
        elif found is not None:
            steps.append(
                Step(
                    "delete",
                    what,
                    lambda: k.rbac.delete_namespaced_role_binding(reader, SYSTEM_NAMESPACE),
                )
            )
    steps += _binding_steps(k, namespace, name, ROLES[role], subject, labels)
    token = _Token()

    def request() -> None:
        token.value, token.expires = request_token(k.core, namespace, user, days)

    def write() -> None:
        config = kubeconfig_for(url, ca_data, namespace, user, token.value, namespace)
        write_private(output, yaml.safe_dump(config, sort_keys=False))
        ok(f"kubeconfig for {user} written to {output} (0600, token valid until {token.expires})")
        warn("hand it over privately (it is a credential); `invoke access.revoke` disables it")

    steps += [
        Step("create", f"token of {account} (TokenRequest, valid {days} days)", request),
        file_step(output, f"kubeconfig for {url}, namespace {namespace}", write),
    ]
    return Plan(f"access.grant {role} on {namespace} to {user}", steps)


def revoke_plan(k: Kube, user: str, namespaces: list[str]) -> Plan:
    """What `access.revoke` deletes in NAMESPACES (the token stops working at once)."""
    steps: list[Step] = []
    for namespace in namespaces:
        for obj in account_objects(k, user, namespace):
            what = f"{obj.kind} {obj.namespace}/{obj.name}"
            found, why = _fetch(obj.read, obj.name, obj.namespace)
            if why:
                steps.append(unknown(what, why))
            elif found is None:
                steps.append(note("skip (absent)", what))
            else:
                steps.append(
                    Step(
                        "delete",
                        what,
                        partial(if_exists, obj.delete, obj.name, obj.namespace),
                    )
                )
    if not any(s.run or s.stop for s in steps):  # nothing to delete, and nothing unread
        steps.append(note("keep", f"{user} has no access in {', '.join(namespaces)}"))
    return Plan(f"access.revoke of {user}", steps)


def run_grant(
    cfg: EnvConfig, user: str, role: str, output: Path, days: int, server: str | None, dry_run: bool
) -> None:
    """`invoke access.grant`: plan it from the cluster, then run it (or print it)."""
    check_grant(role, days)
    k, why = connect_or_step(cfg)
    title = f"access.grant {role} on {cfg.namespace} to {user}"
    plan = (
        Plan(title, why)
        if k is None
        else grant_plan(k, cfg.namespace, user, role, output, days, server)
    )
    execute(plan, dry_run)


def run_revoke(cfg: EnvConfig, user: str, namespaces: list[str], dry_run: bool) -> None:
    """`invoke access.revoke`: plan it from the cluster, then run it (or print it)."""
    k, why = connect_or_step(cfg)
    plan = Plan(f"access.revoke of {user}", why) if k is None else revoke_plan(k, user, namespaces)
    execute(plan, dry_run)
