"""The devops Role against what the rendered overlays contain, and prod's digest pinning.

Both overlays are rendered with cluster.render.render (real `kubectl kustomize`); the API calls
go through the real kubernetes client to the fake API server (tests/support/fakeapi.py), which
enforces RBAC as kube-apiserver does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke import Context
from kubernetes.client.exceptions import ApiException
from support.clock import FakeClock
from support.fakeapi.connect import config_for, connect_with, grant
from support.fakeapi.kinds import RESOURCES
from support.fakeapi.rbac import Info, rule_allows
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster import access
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.gate import gate
from desbordante_ops.cluster.release.ledger import Record, write_entry

from .kube_objects import pod_spec, render_env, workloads

# What `kubectl diff`, `kubectl apply` and a label-scoped prune do with each object.
APPLY_VERBS = ("get", "list", "create", "patch", "update", "delete")
# Namespaced resources devops may touch that the overlays do not contain, and why.
EXTRAS = {
    ("", "secrets"): "secrets.generate and rotation; deploy checks they exist",
    ("", "pods"): "deploy waits for and explains pods (read only)",
    ("apps", "replicasets"): "deploy finds the pods of a Deployment's new revision (read only)",
    ("", "events"): "deploy's diagnostics (read only)",
    ("", "pods/log"): "deploy's diagnostics, logs",
    ("", "pods/exec"): "password rotation runs psql / rabbitmqctl in the pods",
    ("", "namespaces"): "get of its own Namespace object (secrets.generate reads it)",
    ("coordination.k8s.io", "leases"): "the deploy lock (Lease desbordante-deploy)",
}
CLUSTER_SCOPED_OR_RBAC = {
    "nodes",
    "persistentvolumes",
    "storageclasses",
    "customresourcedefinitions",
    "clusterroles",
    "clusterrolebindings",
    "roles",
    "rolebindings",
    "pods/status",
    "serviceaccounts/token",
}


def plural(kind: str) -> str:
    """The resource name of KIND as the API serves it (enough for the kinds we render)."""
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def group_of(doc: dict[str, Any]) -> str:
    return str(doc["apiVersion"]).rpartition("/")[0]


def devops_rules() -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": list(resources), "verbs": verbs}
        for group, resources, verbs in access.DEVOPS_RULES
    ]


def allowed(verb: str, group: str, resource: str, name: str = "x") -> bool:
    info = Info(verb, group, "v1", *resource.partition("/")[::2], "desbordante-stage", name)
    return any(rule_allows(rule, info) for rule in devops_rules())


def namespaced(rendered: Rendered) -> list[dict[str, Any]]:
    return [doc for doc in rendered.docs if doc["kind"] != "Namespace"]


def test_devops_can_apply_every_namespaced_kind_of_both_overlays(
    all_rendered: dict[str, Rendered],
) -> None:
    kinds = {(group_of(doc), doc["kind"]) for r in all_rendered.values() for doc in namespaced(r)}
    assert ("traefik.io", "Middleware") in kinds
    for group, kind in sorted(kinds):
        for verb in APPLY_VERBS:
            assert allowed(verb, group, plural(kind)), f"devops cannot {verb} {kind} ({group})"


def test_devops_is_granted_nothing_beyond_the_overlays_and_the_listed_extras(
    all_rendered: dict[str, Rendered],
) -> None:
    rendered = {
        (group_of(doc), plural(doc["kind"])) for r in all_rendered.values() for doc in namespaced(r)
    }
    for group, resources, verbs in access.DEVOPS_RULES:
        assert "*" not in verbs and group != "*"
        for resource in resources:
            assert "*" not in resource and resource not in CLUSTER_SCOPED_OR_RBAC
            assert (group, resource) in rendered or (group, resource) in EXTRAS, resource
    for resource in ("pods", "events", "pods/log"):
        assert not any(allowed(verb, "", resource) for verb in ("create", "patch", "delete"))
    assert not any(allowed(v, "", "namespaces") for v in ("list", "create", "patch", "delete"))
    assert not allowed("get", "rbac.authorization.k8s.io", "roles")
    assert not allowed("update", "", "pods/status")


def post(k: Kube, doc: dict[str, Any], namespace: str) -> int:
    """Create DOC through the API as K's user; the HTTP status."""
    kind = next(v for v in RESOURCES.values() if v.kind == doc["kind"])
    prefix = f"/apis/{kind.api_version}" if kind.group else "/api/v1"
    scope = f"/namespaces/{namespace}" if kind.namespaced else ""
    try:
        response = k.api_client.call_api(
            f"{prefix}{scope}/{kind.resource}",
            "POST",
            body=doc,
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
    except ApiException as exc:
        return int(exc.status)
    return int(response.status)


def test_devops_creates_every_rendered_object_but_the_namespace(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path, all_rendered: dict[str, Rendered]
) -> None:
    stage = all_rendered["stage"]
    devops = connect_with(grant(admin, tmp_path, "devops"))
    codes = {doc["kind"]: post(devops, doc, stage.namespace) for doc in namespaced(stage)}
    assert set(codes.values()) == {201}, codes
    assert post(devops, stage.of_kind("Namespace")[0], stage.namespace) == 403


def test_the_old_admin_binding_could_not_apply_the_traefik_middlewares(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path, all_rendered: dict[str, Rendered]
) -> None:
    """Issue 10, item 3: `middlewares.traefik.io "flower-auth" is forbidden` with `admin`."""
    devops = connect_with(grant(admin, tmp_path, "devops"))
    binding = admin.rbac.read_namespaced_role_binding("access-jane", "desbordante-stage")
    admin.rbac.delete_namespaced_role_binding("access-jane", "desbordante-stage")
    binding.role_ref.kind, binding.role_ref.name = "ClusterRole", "admin"
    binding.metadata.resource_version = None
    admin.rbac.create_namespaced_role_binding("desbordante-stage", binding)
    middleware = all_rendered["stage"].of_kind("Middleware")[0]
    assert post(devops, middleware, "desbordante-stage") == 403
    denied = fake_api.requests[-1]
    assert denied.code == 403 and "/middlewares" in denied.path


def test_prod_renders_exactly_the_digest_stage_ran(
    fake_api: FakeApiServer, admin: Kube, admin_kubeconfig: Path
) -> None:
    repo = "ghcr.io/desbordante/desbordante-backend"
    digest = "sha256:" + "ab" * 32
    tag = "v1.4.0"
    entry = Record(
        "desbordante-stage", tag, f"{repo}:{tag}", f"{repo}@{digest}", "t", "a", "verify-x", "t"
    )
    write_entry(admin.core, entry)
    by_tag = render_env("prod", tag)
    cfg = config_for(admin_kubeconfig, "prod")
    x = Release(Context(), cfg, admin, tag, by_tag, Options(yes=True, clock=FakeClock()))
    pinned = gate(x, "desbordante-stage")[0].rendered
    assert pinned.image == f"{repo}@{digest}"
    images = {
        c["image"]
        for w in workloads(pinned.docs)
        for c in [*pod_spec(w).get("initContainers", []), *pod_spec(w)["containers"]]
        if c["image"].startswith(repo)
    }
    assert images == {f"{repo}@{digest}"}
    assert pinned.migrate_job.startswith("migrate-v1-4-0-")
    assert pinned.migrate_job != by_tag.migrate_job  # a different image is a different Job


def test_plural_names_the_resources_as_the_api_serves_them(
    all_rendered: dict[str, Rendered],
) -> None:
    served = {(v.group, v.kind): v.resource for v in RESOURCES.values()}
    for doc in all_rendered["prod"].docs:
        assert served[(group_of(doc), doc["kind"])] == plural(doc["kind"])
