"""RBAC of the fake API server (tests/support/fakeapi/): request attributes and rules.

Request attributes as kube-apiserver's RequestInfo derives them (verb from the method,
`resource/subresource`, API group, namespace: a namespace's own URL is in that namespace), rules
matched on verbs, apiGroups, resources, resourceNames and `*`, subjects (User, Group,
ServiceAccount), and the namespaced rules of the built-in ClusterRoles `view` and `admin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MASTERS = "system:masters"
ANONYMOUS = "system:anonymous"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Info:
    """The authorization attributes of a resource request (kube-apiserver's RequestInfo)."""

    verb: str
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _rule(group: str, resources: str, verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources.split(), "verbs": verbs}


# The namespaced rules of the built-in `view` and `admin` ClusterRoles (kubernetes bootstrap
# policy, abridged to the API groups a k3s server has). Neither covers Traefik's CRDs.
VIEW_RULES: list[dict[str, Any]] = [
    _rule(
        "",
        "configmaps endpoints persistentvolumeclaims persistentvolumeclaims/status pods "
        "replicationcontrollers replicationcontrollers/scale serviceaccounts services "
        "services/status bindings events limitranges namespaces/status pods/log pods/status "
        "replicationcontrollers/status resourcequotas resourcequotas/status namespaces",
        READ,
    ),
    _rule("discovery.k8s.io", "endpointslices", READ),
    _rule(
        "apps",
        "controllerrevisions daemonsets daemonsets/status deployments deployments/scale "
        "deployments/status replicasets replicasets/scale replicasets/status statefulsets "
        "statefulsets/scale statefulsets/status",
        READ,
    ),
    _rule("autoscaling", "horizontalpodautoscalers horizontalpodautoscalers/status", READ),
    _rule("batch", "cronjobs cronjobs/status jobs jobs/status", READ),
    _rule("policy", "poddisruptionbudgets poddisruptionbudgets/status", READ),
    _rule("networking.k8s.io", "ingresses ingresses/status networkpolicies", READ),
]
ADMIN_RULES: list[dict[str, Any]] = [
    *VIEW_RULES,
    _rule("", "pods/attach pods/exec pods/portforward pods/proxy secrets services/proxy", READ),
    _rule("", "serviceaccounts", ["impersonate"]),
    _rule("", "pods pods/attach pods/exec pods/portforward pods/proxy", WRITE),
    _rule("", "pods/eviction", ["create"]),
    _rule(
        "",
        "configmaps events persistentvolumeclaims replicationcontrollers "
        "replicationcontrollers/scale secrets serviceaccounts services services/proxy",
        WRITE,
    ),
    _rule("", "serviceaccounts/token", ["create"]),
    _rule(
        "apps",
        "daemonsets deployments deployments/rollback deployments/scale replicasets "
        "replicasets/scale statefulsets statefulsets/scale",
        WRITE,
    ),
    _rule("autoscaling", "horizontalpodautoscalers", WRITE),
    _rule("batch", "cronjobs jobs", WRITE),
    _rule("networking.k8s.io", "ingresses networkpolicies", WRITE),
    _rule("policy", "poddisruptionbudgets", WRITE),
    _rule("coordination.k8s.io", "leases", READ + WRITE),
    _rule("rbac.authorization.k8s.io", "rolebindings roles", READ + WRITE),
    _rule("authorization.k8s.io", "localsubjectaccessreviews", ["create"]),
]
BUILTIN_CLUSTER_ROLES = {"view": VIEW_RULES, "admin": ADMIN_RULES}


def request_info(method: str, path: str, query: dict[str, list[str]]) -> Info | None:
    """Resource attributes of a request, or None for a non-resource path."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    watching = query.get("watch", [""])[0] in ("true", "1")
    verb = {
        "GET": "get" if name else ("watch" if watching else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    return Info(verb, group, version, resource, subresource, namespace, name)


def rule_allows(rule: dict[str, Any], info: Info) -> bool:
    """One PolicyRule against the request attributes, as RBAC matches them."""
    verbs, groups = rule.get("verbs") or [], rule.get("apiGroups") or []
    resources, names = rule.get("resources") or [], rule.get("resourceNames") or []
    resource_ok = (
        "*" in resources
        or info.full_resource in resources
        or (bool(info.subresource) and f"*/{info.subresource}" in resources)
    )
    return (
        ("*" in verbs or info.verb in verbs)
        and ("*" in groups or info.group in groups)
        and resource_ok
        and (not names or (bool(info.name) and info.name in names))
    )


def subject_matches(subject: dict[str, Any], user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{name}"
    return False


def forbidden_message(user: User, info: Info) -> str:
    """The message of a 403 exactly as kube-apiserver words it."""
    where = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    reason = (
        f'User "{user.name}" cannot {info.verb} resource "{info.full_resource}" '
        f'in API group "{info.group}" {where}'
    )
    what = f"{info.resource}.{info.group}" if info.group else info.resource
    subject = f'{what} "{info.name}"' if info.name else what
    return f"{subject} is forbidden: {reason}"
