"""access.grant / access.revoke as plans: the dry run lists every object the run then makes or
deletes (read from the cluster), writes nothing, no kubeconfig either; the run executes exactly
those steps. On the fake k3s in process, and as tasks over HTTPS with the admin's kubeconfig
from the environment (KUBECONFIG_PATH). What the granted credentials may do: test_access.py.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from invoke import Context, Exit
from kubernetes.client.exceptions import ApiException
from support.fakeapi.connect import connect_with, grant, kube_for, token_of
from support.fakeapi.k3s import Cluster
from support.fakeapi.server import FakeApiServer
from support.plans import plan_lines

from desbordante_ops.cluster.access import grant_plan, revoke_plan
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import ensure_namespace
from desbordante_ops.cluster.release.ledger import LEDGER, SYSTEM_NAMESPACE
from desbordante_ops.core import plan
from desbordante_ops.core.plan import Plan, Seen
from desbordante_ops.tasks import access as access_tasks

STAGE = "desbordante-stage"
PROD = "desbordante-prod"
SYSTEM = SYSTEM_NAMESPACE
FAKE_URL = "https://fake-apiserver.invalid"  # where the in-process connection points

pytestmark = pytest.mark.usefixtures("wide_console")


def twice(server: FakeApiServer, build: Callable[[], Plan]) -> tuple[Seen, Seen]:
    """The dry run (which must write nothing) and then the real run of the plan BUILD makes."""
    with plan.watching() as seen:
        before = len(server.writes())
        plan.execute(build(), dry_run=True)
        assert server.writes()[before:] == []
        plan.execute(build())
    return seen[0], seen[1]


def status(call: Callable[[], object]) -> int:
    """The HTTP status CALL gets from the API (200 when it succeeds)."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


@pytest.fixture
def cluster(k3s: Cluster) -> Cluster:
    """The fake k3s with stage's and prod's namespaces."""
    for namespace in (STAGE, PROD):
        ensure_namespace(k3s.admin.core, namespace, dict(names.NAMESPACE_LABELS))
    return k3s


def granting(cluster: Cluster, out: Path, role: str, days: int = 30) -> Callable[[], Plan]:
    return lambda: grant_plan(cluster.admin, STAGE, "jane", role, out, days=days)


# --- plan equals run -----------------------------------------------------------------------------


def test_plan_is_run_granting_a_viewer(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "jane.kubeconfig"
    with plan.watching() as seen:
        plan.execute(granting(cluster, out, "viewer")(), dry_run=True)
        assert not out.exists()  # the dry run writes no kubeconfig
        plan.execute(granting(cluster, out, "viewer")())
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert real.rows == [
        ("create", f"ServiceAccount {STAGE}/access-jane (role viewer)"),
        ("create", f"RoleBinding {STAGE}/access-jane -> ClusterRole view"),
        ("create", f"token of ServiceAccount {STAGE}/access-jane (TokenRequest, valid 30 days)"),
        ("write", f"{out} (mode 0600): kubeconfig for {FAKE_URL}, namespace {STAGE}"),
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    viewer = kube_for(cluster.server, token=token_of(out))
    assert viewer.core.list_namespaced_pod(STAGE).items == []
    assert status(lambda: viewer.core.list_namespaced_secret(STAGE)) == 403


def test_plan_is_run_granting_devops(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "jane.kubeconfig"
    dry, real = twice(cluster.server, granting(cluster, out, "devops"))
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert [target for _, target in real.rows[:5]] == [
        f"ServiceAccount {STAGE}/access-jane (role devops)",
        f"Role {STAGE}/desbordante-devops",
        f"namespace {SYSTEM}",
        f"Role {SYSTEM}/desbordante-release-reader",
        f"RoleBinding {SYSTEM}/access-jane-{STAGE} -> Role desbordante-release-reader",
    ]
    devops = kube_for(cluster.server, token=token_of(out))
    assert devops.core.list_namespaced_secret(STAGE).items == []
    assert status(lambda: devops.core.list_namespaced_secret(PROD)) == 403


def test_plan_is_run_changing_the_role_and_the_old_token_loses_the_rights_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "jane.kubeconfig"
    plan.execute(granting(cluster, out, "devops")())
    cluster.admin.core.create_namespaced_config_map(
        SYSTEM, {"metadata": {"name": LEDGER}, "data": {}}
    )
    old = kube_for(cluster.server, token=token_of(out))
    assert status(lambda: old.core.read_namespaced_config_map(LEDGER, SYSTEM)) == 200
    dry, real = twice(cluster.server, granting(cluster, out, "viewer", days=7))
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert real.rows == [
        ("update labels", f"ServiceAccount {STAGE}/access-jane (role viewer)"),
        ("delete", f"RoleBinding {SYSTEM}/access-jane-{STAGE} (release ledger read access)"),
        ("delete", f"RoleBinding {STAGE}/access-jane (-> Role desbordante-devops)"),
        ("create", f"RoleBinding {STAGE}/access-jane -> ClusterRole view"),
        ("create", f"token of ServiceAccount {STAGE}/access-jane (TokenRequest, valid 7 days)"),
        ("replace", f"{out} (mode 0600): kubeconfig for {FAKE_URL}, namespace {STAGE}"),
    ]
    assert status(lambda: old.core.list_namespaced_secret(STAGE)) == 403
    assert status(lambda: old.core.read_namespaced_config_map(LEDGER, SYSTEM)) == 403
    new = kube_for(cluster.server, token=token_of(out))
    assert new.core.list_namespaced_pod(STAGE).items == []


def test_plan_is_run_granting_again_keeps_the_binding_and_resets_the_rules(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "jane.kubeconfig"
    plan.execute(granting(cluster, out, "devops")())
    dry, real = twice(cluster.server, granting(cluster, out, "devops"))
    assert dry.rows == real.rows and real.ran == real.runnable
    assert ("keep", f"RoleBinding {STAGE}/access-jane -> Role desbordante-devops") in real.rows
    assert ("replace (rules reset)", f"Role {STAGE}/desbordante-devops") in real.rows
    assert ("create", f"namespace {SYSTEM}") not in real.rows


def test_plan_is_run_revoking_and_the_token_stops_at_once(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "jane.kubeconfig"
    plan.execute(granting(cluster, out, "devops")())
    devops = kube_for(cluster.server, token=token_of(out))
    dry, real = twice(cluster.server, lambda: revoke_plan(cluster.admin, "jane", [STAGE, PROD]))
    assert dry.rows == real.rows and real.ran == real.runnable
    assert real.rows == [
        ("delete", f"RoleBinding {STAGE}/access-jane"),
        ("delete", f"RoleBinding {SYSTEM}/access-jane-{STAGE}"),
        ("delete", f"ServiceAccount {STAGE}/access-jane"),
        ("skip (absent)", f"RoleBinding {PROD}/access-jane"),
        ("skip (absent)", f"RoleBinding {SYSTEM}/access-jane-{PROD}"),
        ("skip (absent)", f"ServiceAccount {PROD}/access-jane"),
    ]
    assert status(lambda: devops.core.list_namespaced_pod(STAGE)) == 401
    again = revoke_plan(cluster.admin, "jane", [STAGE])
    assert again.rows[-1] == ("keep", f"jane has no access in {STAGE}")


def test_revoke_by_someone_who_may_not_read_the_access_says_so_and_deletes_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Devops may read neither RoleBindings nor ServiceAccounts: the plan says what it could not
    read (not that the person has no access) and the run stops before any delete."""
    plan.execute(granting(cluster, tmp_path / "jane.kubeconfig", "viewer")())
    devops = cluster.grant("devops", user="joe")
    built = revoke_plan(devops, "jane", [STAGE])
    assert [action for action, _ in built.rows] == ["unknown"] * 3
    assert built.rows[0] == ("unknown", f"RoleBinding {STAGE}/access-jane: HTTP 403 Forbidden")
    before = len(cluster.server.writes())
    with pytest.raises(Exit, match=f"Cannot go on: RoleBinding {STAGE}/access-jane: HTTP 403"):
        plan.execute(built)
    assert cluster.server.writes()[before:] == []
    assert cluster.server.get("ServiceAccount", "access-jane", STAGE) is not None


# --- the tasks over HTTPS -------------------------------------------------------------------------


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch, admin_kubeconfig: Path) -> Path:
    """stage's settings point at the fake API server's admin kubeconfig."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    return admin_kubeconfig


def writes(api: FakeApiServer, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path}" for r in api.requests[since:] if r.method not in ("GET", "HEAD")]


def test_grant_dry_run_lists_every_object_then_the_run_makes_them_and_a_working_kubeconfig(
    fake_api: FakeApiServer,
    admin: Kube,
    stage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "jane.kubeconfig"
    seen = len(fake_api.requests)
    access_tasks.grant(Context(), name="jane", role="devops", output=str(out), dry_run=True)
    assert writes(fake_api, seen) == [] and not out.exists()
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ create │ ServiceAccount {STAGE}/access-jane (role devops) │",
        f"│ 2 │ create │ Role {STAGE}/desbordante-devops │",
        f"│ 3 │ create │ namespace {SYSTEM} │",
        f"│ 4 │ create │ Role {SYSTEM}/desbordante-release-reader │",
        f"│ 5 │ create │ RoleBinding {SYSTEM}/access-jane-{STAGE} -> Role "
        "desbordante-release-reader │",
        f"│ 6 │ create │ RoleBinding {STAGE}/access-jane -> Role desbordante-devops │",
        f"│ 7 │ create │ token of ServiceAccount {STAGE}/access-jane (TokenRequest, valid 90 "
        "days) │",
        f"│ 8 │ write │ {out} (mode 0600): kubeconfig for {fake_api.url}, namespace {STAGE} │",
    ]
    access_tasks.grant(Context(), name="jane", role="devops", output=str(out))
    printed = capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = token_of(out)
    assert token not in printed  # the credential is never shown
    jane = connect_with(out)
    assert jane.core.list_namespaced_secret(STAGE).items == []
    assert fake_api.requests[-1].headers["authorization"] == f"Bearer {token}"
    assert fake_api.requests[-1].user == f"system:serviceaccount:{STAGE}:access-jane"


def test_grant_of_another_role_lists_the_binding_it_replaces_and_keeps_the_kubeconfig(
    fake_api: FakeApiServer,
    admin: Kube,
    stage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = grant(admin, tmp_path, "devops")
    before = issued.read_bytes()
    seen = len(fake_api.requests)
    access_tasks.grant(
        Context(), name="jane", role="viewer", days=7, output=str(issued), dry_run=True
    )
    assert writes(fake_api, seen) == [] and issued.read_bytes() == before
    connect_with(issued)  # the devops kubeconfig still works
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ update labels │ ServiceAccount {STAGE}/access-jane (role viewer) │",
        f"│ 2 │ delete │ RoleBinding {SYSTEM}/access-jane-{STAGE} (release ledger read access) │",
        f"│ 3 │ delete │ RoleBinding {STAGE}/access-jane (-> Role desbordante-devops) │",
        f"│ 4 │ create │ RoleBinding {STAGE}/access-jane -> ClusterRole view │",
        f"│ 5 │ create │ token of ServiceAccount {STAGE}/access-jane (TokenRequest, valid 7 "
        "days) │",
        f"│ 6 │ replace │ {issued} (mode 0600): kubeconfig for {fake_api.url}, namespace {STAGE} │",
    ]


def test_grant_refuses_what_the_real_grant_refuses_before_reading_anything(
    fake_api: FakeApiServer, stage: Path
) -> None:
    for dry_run in (True, False):
        with pytest.raises(Exit, match="viewer, devops"):
            access_tasks.grant(Context(), name="jane", role="root", dry_run=dry_run)
        with pytest.raises(Exit, match="between 1 and 365"):
            access_tasks.grant(Context(), name="jane", days=400, dry_run=dry_run)
        with pytest.raises(Exit, match="Pass --name"):
            access_tasks.grant(Context(), dry_run=dry_run)
        with pytest.raises(Exit, match="lower-case"):
            access_tasks.revoke(Context(), name="Jane", dry_run=dry_run)
    assert fake_api.requests == []


def test_revoke_dry_run_lists_what_it_deletes_the_run_deletes_it_and_the_token_stops(
    fake_api: FakeApiServer,
    admin: Kube,
    stage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = grant(admin, tmp_path, "devops")
    seen = len(fake_api.requests)
    access_tasks.revoke(Context(), name="jane", dry_run=True)
    assert writes(fake_api, seen) == []
    assert connect_with(issued).core.list_namespaced_secret(STAGE).items == []
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ delete │ RoleBinding {STAGE}/access-jane │",
        f"│ 2 │ delete │ RoleBinding {SYSTEM}/access-jane-{STAGE} │",
        f"│ 3 │ delete │ ServiceAccount {STAGE}/access-jane │",
        f"│ 4 │ skip (absent) │ RoleBinding {PROD}/access-jane │",
        f"│ 5 │ skip (absent) │ RoleBinding {SYSTEM}/access-jane-{PROD} │",
        f"│ 6 │ skip (absent) │ ServiceAccount {PROD}/access-jane │",
    ]
    access_tasks.revoke(Context(), name="jane")
    assert [w.split("?")[0] for w in writes(fake_api, seen)] == [
        f"DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/{STAGE}/rolebindings/access-jane",
        f"DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/{SYSTEM}/rolebindings/"
        f"access-jane-{STAGE}",
        f"DELETE /api/v1/namespaces/{STAGE}/serviceaccounts/access-jane",
    ]
    with pytest.raises(Exit, match=r"refused the credentials .* \(401\): the token expired"):
        connect_with(issued)  # one clear line, not "is k3s running?"


def test_access_list_shows_who_has_which_role(
    fake_api: FakeApiServer,
    admin: Kube,
    stage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grant(admin, tmp_path, "devops", user="jane")
    grant(admin, tmp_path, "viewer", user="joe")
    capsys.readouterr()
    access_tasks.list(Context(), env="stage")
    rows = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert any(row.startswith("│ jane │ devops │") for row in rows)
    assert any(row.startswith("│ joe │ viewer │") for row in rows)
