"""What access.grant hands out and access.revoke takes away, through the real kubernetes client
against the fake API server over HTTPS.

tests/support/fakeapi enforces authentication (client certificates, bearer tokens) and RBAC
like kube-apiserver; the kubeconfigs are the files access.grant writes. The plans themselves
(dry run = run) and the tasks: tests/unit/test_access_plan.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from invoke import Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from support.fakeapi.connect import config_for, grant
from support.fakeapi.connect import connect_with as connect
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster import access
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release.ledger import LEDGER, SYSTEM_NAMESPACE
from desbordante_ops.cluster.secrets.generate import ensure_secrets, listing
from desbordante_ops.cluster.secrets.specs import SPECS
from desbordante_ops.core import plan
from desbordante_ops.core.files import write_private

NS = "desbordante-stage"
OTHER_NS = "desbordante-prod"


def granted(admin: Kube, tmp_path: Path, role: str, user: str = "jane") -> Kube:
    return connect(grant(admin, tmp_path, role, user))


def forbidden(call: object, *args: object) -> str:
    with pytest.raises(ApiException) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.status == 403, info.value.body
    status = json.loads(info.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Forbidden", 403)
    return str(status["message"])


def configmap(name: str) -> k8s.V1ConfigMap:
    return k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name), data={"k": "v"})


def test_token_kubeconfig_puts_the_bearer_token_on_the_wire(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path
) -> None:
    """kubernetes==36.0.0 sent no Authorization header: every token user was anonymous."""
    fake_api.add_token("t0ken-of-jane", "jane")
    config = access.kubeconfig_for(fake_api.url, fake_api.ca_data, NS, "jane", "t0ken-of-jane", NS)
    path = tmp_path / "jane.kubeconfig"
    write_private(path, yaml.safe_dump(config))
    before = len(fake_api.requests)
    k = connect(path)  # GET /version
    forbidden(k.core.list_namespaced_secret, NS)  # authenticated as jane, who may not read
    seen = fake_api.requests[before:]
    assert [r.path.split("?")[0] for r in seen] == ["/version/", f"/api/v1/namespaces/{NS}/secrets"]
    assert [r.headers.get("authorization") for r in seen] == ["Bearer t0ken-of-jane"] * 2
    assert [r.user for r in seen] == ["jane", "jane"]


def test_granted_devops_kubeconfig_authenticates_as_its_service_account(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path
) -> None:
    out = grant(admin, tmp_path, "devops")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = yaml.safe_load(out.read_text())
    assert config["contexts"][0]["context"]["namespace"] == NS
    assert config["clusters"][0]["cluster"]["server"] == fake_api.url
    token = config["users"][0]["user"]["token"]
    jane = connect(out)
    assert jane.core.list_namespaced_secret(NS).items == []
    assert fake_api.requests[-1].headers["authorization"] == f"Bearer {token}"
    assert fake_api.requests[-1].user == f"system:serviceaccount:{NS}:access-jane"


def test_viewer_reads_but_cannot_read_secrets_or_write(admin: Kube, tmp_path: Path) -> None:
    viewer = granted(admin, tmp_path, "viewer")
    assert viewer.core.list_namespaced_pod(NS).items == []
    assert forbidden(viewer.core.list_namespaced_secret, NS) == (
        f'secrets is forbidden: User "system:serviceaccount:{NS}:access-jane" cannot list '
        f'resource "secrets" in API group "" in the namespace "{NS}"'
    )
    forbidden(viewer.core.create_namespaced_config_map, NS, configmap("x"))
    binding = admin.rbac.read_namespaced_role_binding("access-jane", NS)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("ClusterRole", "view")


def test_devops_deploys_its_namespace_and_nothing_beyond(admin: Kube, tmp_path: Path) -> None:
    devops = granted(admin, tmp_path, "devops")
    devops.core.create_namespaced_config_map(NS, configmap("settings"))
    devops.core.patch_namespaced_config_map("settings", NS, {"data": {"k": "w"}})
    assert devops.core.list_namespaced_secret(NS).items == []
    # another environment, cluster-scoped objects, RBAC and tokens are out of reach
    forbidden(devops.core.create_namespaced_config_map, OTHER_NS, configmap("x"))
    assert devops.core.read_namespace(NS).metadata.name == NS  # its own, read only
    forbidden(devops.core.read_namespace, OTHER_NS)
    forbidden(devops.core.patch_namespace, NS, {"metadata": {"labels": {"a": "b"}}})
    forbidden(devops.core.list_namespace)
    forbidden(devops.core.create_namespace, k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="n")))
    forbidden(devops.core.list_node)
    forbidden(devops.rbac.list_namespaced_role_binding, NS)
    forbidden(
        devops.core.create_namespaced_service_account_token,
        "access-jane",
        NS,
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    )


def test_devops_generates_and_lists_the_secrets_of_its_environment(
    admin: Kube, tmp_path: Path
) -> None:
    path = grant(admin, tmp_path, "devops")
    with plan.watching() as seen:
        ensure_secrets(config_for(path), connect(path))
    assert [target.split(" (")[0] for _, target in seen[0].ran] == [
        f"Secret {NS}/{spec.name}" for spec in SPECS
    ]
    rows = listing(connect(path).core, NS)
    assert [row[0] for row in rows] == [spec.name for spec in SPECS]
    assert "missing" not in {row[2] for row in rows}


def test_devops_reads_the_release_ledger_but_cannot_write_it(admin: Kube, tmp_path: Path) -> None:
    devops = granted(admin, tmp_path, "devops")  # creates the namespace of the ledger
    admin.core.create_namespaced_config_map(SYSTEM_NAMESPACE, configmap(LEDGER))
    admin.core.create_namespaced_config_map(SYSTEM_NAMESPACE, configmap("other"))
    assert devops.core.read_namespaced_config_map(LEDGER, SYSTEM_NAMESPACE).data == {"k": "v"}
    message = forbidden(devops.core.patch_namespaced_config_map, LEDGER, SYSTEM_NAMESPACE, {})
    assert message == (
        f'configmaps "{LEDGER}" is forbidden: User "system:serviceaccount:{NS}:access-jane" '
        f'cannot patch resource "configmaps" in API group "" in the namespace "{SYSTEM_NAMESPACE}"'
    )
    forbidden(devops.core.read_namespaced_config_map, "other", SYSTEM_NAMESPACE)
    forbidden(devops.core.list_namespaced_config_map, SYSTEM_NAMESPACE)


def test_changing_role_replaces_the_bindings(admin: Kube, tmp_path: Path) -> None:
    granted(admin, tmp_path, "devops")
    viewer = granted(admin, tmp_path, "viewer")
    binding = admin.rbac.read_namespaced_role_binding("access-jane", NS)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("ClusterRole", "view")
    sa = admin.core.read_namespaced_service_account("access-jane", NS)
    assert sa.metadata.labels[access.ROLE_LABEL] == "viewer"
    forbidden(viewer.core.read_namespaced_config_map, LEDGER, SYSTEM_NAMESPACE)
    devops = granted(admin, tmp_path, "devops")
    binding = admin.rbac.read_namespaced_role_binding("access-jane", NS)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", access.DEVOPS_ROLE)
    assert devops.core.list_namespaced_secret(NS).items == []


def test_grant_repairs_a_devops_role_that_drifted(admin: Kube, tmp_path: Path) -> None:
    granted(admin, tmp_path, "devops")
    role = admin.rbac.read_namespaced_role(access.DEVOPS_ROLE, NS)
    role.rules = role.rules[:1]
    admin.rbac.replace_namespaced_role(access.DEVOPS_ROLE, NS, role)
    granted(admin, tmp_path, "devops", user="joe")
    rules = admin.rbac.read_namespaced_role(access.DEVOPS_ROLE, NS).rules
    assert len(rules) == len(access.DEVOPS_RULES)


def test_revoke_invalidates_the_token_at_once(admin: Kube, tmp_path: Path) -> None:
    kubeconfig = grant(admin, tmp_path, "devops")
    devops = connect(kubeconfig)
    assert devops.core.list_namespaced_secret(NS).items == []
    with plan.watching() as seen:
        plan.execute(access.revoke_plan(admin, "jane", [NS, OTHER_NS]))
    assert [target for action, target in seen[0].ran] == [
        f"RoleBinding {NS}/access-jane",
        f"RoleBinding {SYSTEM_NAMESPACE}/access-jane-{NS}",
        f"ServiceAccount {NS}/access-jane",
    ]
    with pytest.raises(ApiException) as info:
        devops.core.list_namespaced_secret(NS)
    assert info.value.status == 401
    with pytest.raises(Exit, match=r"refused the credentials .* \(401\): the token expired"):
        connect(kubeconfig)  # one clear line, not "is k3s running?"
    assert admin.rbac.list_namespaced_role_binding(NS).items == []
    assert admin.rbac.list_namespaced_role_binding(SYSTEM_NAMESPACE).items == []
    assert admin.core.list_namespaced_service_account(NS).items == []
    again = access.revoke_plan(admin, "jane", [NS])
    assert [s.row for s in again.steps if s.run] == []  # nothing left to delete
    assert again.rows[-1] == ("keep", f"jane has no access in {NS}")


def test_accounts_lists_who_has_which_role(admin: Kube, tmp_path: Path) -> None:
    granted(admin, tmp_path, "devops", user="jane")
    granted(admin, tmp_path, "viewer", user="joe")
    assert sorted((n, r) for n, r, _ in access.accounts(admin, NS)) == [
        ("jane", "devops"),
        ("joe", "viewer"),
    ]


@pytest.mark.parametrize("bad", ["Jane", "jane_doe", "-x", "a" * 60])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(Exit, match="lower-case"):
        access.account_name(bad)


def test_unknown_role_and_lifetime_are_refused_before_reading_anything(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path
) -> None:
    before = len(fake_api.requests)
    with pytest.raises(Exit, match="viewer, devops"):
        access.grant_plan(admin, NS, "jane", "root", tmp_path / "a")
    with pytest.raises(Exit, match="between 1 and 365"):
        access.grant_plan(admin, NS, "jane", "viewer", tmp_path / "a", days=0)
    assert len(fake_api.requests) == before and not (tmp_path / "a").exists()
