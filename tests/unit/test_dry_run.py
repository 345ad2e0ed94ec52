"""Every `--dry-run`: it prints the plan read from the real state, changes nothing, exits 0.

The cluster is the fake API server (tests/support/fakeapi.py: the real kubernetes client,
every request recorded), outside tools are a MockContext that knows only the read-only
commands a dry run may run, and files are checked byte for byte before and after.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest
from docker.errors import ImageNotFound
from invoke import Collection, Context, Exit, MockContext, Result, Task
from support.fakeapi import FakeApiServer
from support.fakeapi_kube import connect, grant
from support.mockrun import commands
from support.plans import plan_lines

from desbordante_ops.cluster import names
from desbordante_ops.cluster.rotation import PENDING_KEY, STARTED_AT
from desbordante_ops.core.plan import DRY_RUN
from desbordante_ops.image import push as image_push
from desbordante_ops.tasks import access as access_tasks
from desbordante_ops.tasks import images as images_tasks
from desbordante_ops.tasks import namespace
from desbordante_ops.tasks import secrets as secrets_tasks

STAGE = "desbordante-stage"
PROD = "desbordante-prod"
SYSTEM = "desbordante-system"


pytestmark = pytest.mark.usefixtures("wide_console")


# Issue 13: every task that changes a server or a registry takes --dry-run (and none else).
CHANGES_A_SERVER = {
    "deploy.deploy",
    "deploy.teardown",
    "deploy.rollback",
    "secrets.generate",
    "access.grant",
    "access.revoke",
    "images.push",
    "k3s.install",
    "k3s.uninstall",
    "k3s.registry",
    "backup",
    "restore",
    "bootstrap.bootstrap",
    "releases.record",
}


def all_tasks(collection: Collection, prefix: str = "") -> dict[str, Task]:
    found = {f"{prefix}{name}": each for name, each in collection.tasks.items()}
    for name, sub in collection.collections.items():
        found.update(all_tasks(sub, f"{name}."))
    return found


# A copy: invoke consumes a task's help texts when it builds its arguments.
TASKS = all_tasks(copy.deepcopy(namespace()))


def test_the_list_names_real_tasks() -> None:
    assert set(TASKS) >= CHANGES_A_SERVER


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_takes_dry_run_exactly_when_it_changes_a_server(name: str) -> None:
    arguments = {argument.name: argument for argument in TASKS[name].get_arguments()}
    if name not in CHANGES_A_SERVER:
        assert "dry_run" not in arguments and "dry-run" not in arguments
        return
    flag = arguments.get("dry_run") or arguments.get("dry-run")
    assert flag is not None, f"{name} has no --dry-run"
    assert flag.kind is bool and flag.default is False and flag.help


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch, admin_kubeconfig: Path) -> Path:
    """stage's settings point at the fake API server's admin kubeconfig."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    return admin_kubeconfig


def writes(api: FakeApiServer, since: int = 0) -> list[str]:
    """Every request from the SINCE-th on that is not a read."""
    return [f"{r.method} {r.path}" for r in api.requests[since:] if r.method not in ("GET", "HEAD")]


def secret(name: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": STAGE, "annotations": annotations or {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def running(component: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": STAGE,
            "labels": {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: component},
        },
        "spec": {"containers": [{"name": component, "image": "x"}]},
        "status": {"phase": "Running"},
    }


# --- secrets.generate ----------------------------------------------------------------------------


def test_secrets_generate_lists_create_keep_rotate_and_recover_from_the_cluster(
    fake_api: FakeApiServer, admin: Any, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg, mq = names.PostgresSecret.NAME, names.RabbitMQSecret.NAME
    started = {STARTED_AT: "2026-11-20T10:00:00Z"}
    fake_api.seed(secret(pg, {"password": "pw-old-1", PENDING_KEY: "pw-new-2"}, started))
    fake_api.seed(secret(mq, {"password": "pw-old-3"}))
    fake_api.seed(secret(names.ApiAuthSecret.NAME, {"password": "p", "users": "u"}))
    fake_api.seed(running(names.POSTGRES, "postgres-0"))
    before = {key: fake_api.get("Secret", key, STAGE) for key in (pg, mq)}
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", rotate="rabbitmq", dry_run=True)
    assert writes(fake_api, seen) == []
    assert len(fake_api.requests) > seen  # it did read the cluster
    assert {key: fake_api.get("Secret", key, STAGE) for key in (pg, mq)} == before
    out = capsys.readouterr().out
    assert f"secrets.generate in {STAGE} ({DRY_RUN})" in out
    rows = plan_lines(out)
    assert rows == [
        "│ 1 │ exec │ PostgreSQL (user desbordante) in pod postgres-0: ask which password it "
        "accepts (rotation started at 2026-11-20T10:00:00Z) │",
        f"│ 2 │ replace │ Secret {STAGE}/{pg}: new one accepted -> password := the new one, "
        "pending-password removed, rotated-at stamped; else pending-password removed │",
        f"│ 3 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} (only "
        "when the new password is promoted) │",
        f"│ 4 │ replace │ Secret {STAGE}/{mq}: new random password stashed as pending-password │",
        "│ 5 │ exec │ RabbitMQ (user desbordante) in the rabbitmq pod (none runs now: the real "
        "run would stop here): set the new password (on stdin) │",
        f"│ 6 │ replace │ Secret {STAGE}/{mq}: password := the new one, pending-password "
        "removed, rotated-at stamped │",
        f"│ 7 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} │",
        f"│ 8 │ create │ Secret {STAGE}/{names.FlowerSecret.NAME} (keys password, users "
        "(bcrypt); new random password) │",
        f"│ 9 │ keep │ Secret {STAGE}/{names.ApiAuthSecret.NAME} │",
    ]
    assert not [value for value in ("pw-old-1", "pw-new-2", "pw-old-3") if value in out]


def test_secrets_generate_finishes_an_unfinished_rotation_of_the_rotated_secret(
    fake_api: FakeApiServer, admin: Any, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = names.PostgresSecret.NAME
    fake_api.seed(secret(pg, {"password": "pw-old-1", PENDING_KEY: "pw-new-2"}, {STARTED_AT: "T0"}))
    fake_api.seed(running(names.POSTGRES, "postgres-0"))
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", rotate="postgres", dry_run=True)
    assert writes(fake_api, seen) == []
    rows = plan_lines(capsys.readouterr().out)
    assert rows[:3] == [
        "│ 1 │ exec │ PostgreSQL (user desbordante) in pod postgres-0: set the password "
        "stashed at T0 (on stdin) │",
        f"│ 2 │ replace │ Secret {STAGE}/{pg}: password := the new one, pending-password "
        "removed, rotated-at stamped │",
        f"│ 3 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} │",
    ]


def test_secrets_generate_on_a_new_cluster_creates_the_namespace_and_every_secret(
    fake_api: FakeApiServer, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_tasks.generate(Context(), env="stage", dry_run=True)
    assert writes(fake_api) == []
    assert fake_api.get("Namespace", STAGE) is None
    rows = plan_lines(capsys.readouterr().out)
    assert rows[0] == f"│ 1 │ create │ namespace {STAGE} (Pod Security: restricted) │"
    assert [row.split(" │ ")[1] for row in rows] == ["create"] * 5


def test_secrets_generate_without_a_cluster_still_prints_its_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG_PATH", str(tmp_path / "missing"))
    secrets_tasks.generate(Context(), env="stage", rotate="flower", dry_run=True)
    rows = plan_lines(capsys.readouterr().out)
    assert rows[0].startswith(f"│ 1 │ unknown │ the cluster of stage: No kubeconfig at {tmp_path}")
    flower = f"Secret {STAGE}/{names.FlowerSecret.NAME}"
    assert rows[3] == f"│ 4 │ rotate │ {flower} (created if missing) │"


def test_secrets_generate_as_a_viewer_says_what_it_may_not_read(
    fake_api: FakeApiServer,
    admin: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUBECONFIG_PATH", str(grant(admin, tmp_path, "viewer")))
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", dry_run=True)
    assert writes(fake_api, seen) == []
    rows = plan_lines(capsys.readouterr().out)
    assert rows[0] == (
        f"│ 1 │ unknown │ Secret {STAGE}/{names.PostgresSecret.NAME}: not readable: HTTP 403 "
        "Forbidden │"
    )
    assert len(rows) == 4 and all(" │ unknown │ " in row for row in rows)


def test_secrets_generate_refuses_an_unknown_secret_before_reading_anything(
    fake_api: FakeApiServer, stage: Path
) -> None:
    with pytest.raises(Exit, match="no such secret"):
        secrets_tasks.generate(Context(), env="stage", rotate="redis", dry_run=True)
    assert fake_api.requests == []


# --- access.grant / access.revoke ----------------------------------------------------------------


def test_access_grant_lists_every_object_it_would_create_and_writes_no_kubeconfig(
    fake_api: FakeApiServer,
    admin: Any,
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


def test_access_grant_of_another_role_replaces_the_binding_and_the_kubeconfig(
    fake_api: FakeApiServer,
    admin: Any,
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
    connect(issued)  # the devops kubeconfig still works
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ update labels │ ServiceAccount {STAGE}/access-jane (role viewer) │",
        f"│ 2 │ delete │ RoleBinding {SYSTEM}/access-jane-{STAGE} (release ledger read access) │",
        f"│ 3 │ delete │ RoleBinding {STAGE}/access-jane (-> Role desbordante-devops) │",
        f"│ 4 │ create │ RoleBinding {STAGE}/access-jane -> ClusterRole view │",
        f"│ 5 │ create │ token of ServiceAccount {STAGE}/access-jane (TokenRequest, valid 7 "
        "days) │",
        f"│ 6 │ replace │ {issued} (mode 0600): kubeconfig for {fake_api.url}, namespace {STAGE} │",
    ]


def test_access_grant_refuses_what_the_real_grant_refuses(stage: Path, tmp_path: Path) -> None:
    with pytest.raises(Exit, match="viewer, devops"):
        access_tasks.grant(Context(), name="jane", role="root", dry_run=True)
    with pytest.raises(Exit, match="between 1 and 365"):
        access_tasks.grant(Context(), name="jane", days=400, dry_run=True)


def test_access_revoke_lists_what_it_would_delete_and_the_token_keeps_working(
    fake_api: FakeApiServer,
    admin: Any,
    stage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = grant(admin, tmp_path, "devops")
    seen = len(fake_api.requests)
    access_tasks.revoke(Context(), name="jane", dry_run=True)
    assert writes(fake_api, seen) == []
    assert connect(issued).core.list_namespaced_secret(STAGE).items == []
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ delete │ RoleBinding {STAGE}/access-jane │",
        f"│ 2 │ delete │ RoleBinding {SYSTEM}/access-jane-{STAGE} │",
        f"│ 3 │ delete │ ServiceAccount {STAGE}/access-jane │",
        f"│ 4 │ skip (absent) │ RoleBinding {PROD}/access-jane │",
        f"│ 5 │ skip (absent) │ RoleBinding {SYSTEM}/access-jane-{PROD} │",
        f"│ 6 │ skip (absent) │ ServiceAccount {PROD}/access-jane │",
    ]


# --- images.push ---------------------------------------------------------------------------------


def git_reads() -> MockContext:
    """A MockContext that answers the git reads of the image tags (release v1.2.0, clean)."""
    return MockContext(
        run={
            re.compile(r"^git -C \S+ log -1 '--format="): Result("f" * 40 + " abc1234 17000\n"),
            re.compile(r"^git -C \S+ tag --points-at HEAD$"): Result("v1.2.0\n"),
            re.compile(r"^git -C \S+ status --porcelain"): Result(""),
        },
        repeat=True,
    )


class LocalImages:
    """The engine's `images.get` (the only call a dry run may make): these refs exist."""

    def __init__(self, *present: str) -> None:
        self.present = present
        self.images = self

    def get(self, ref: str) -> Any:
        if ref not in self.present:
            raise ImageNotFound(f"No such image: {ref}")
        return type("Image", (), {"short_id": "sha256:0123456789ab"})()


def test_images_push_lists_local_to_remote_refs_and_which_local_images_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    local = "ghcr.io/desbordante/desbordante-backend"
    monkeypatch.setattr(image_push.engine, "connect", lambda: LocalImages(f"{local}:v1.2.0"))
    monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    c = git_reads()
    images_tasks.push(c, env="stage", registry="127.0.0.1:5000", dry_run=True)
    assert {cmd.split()[3] for cmd in commands(c)} == {"log", "tag", "status"}
    remote = "127.0.0.1:5000/desbordante/desbordante-backend"
    config = "credentials: the Docker config of this user (if any)"
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ tag │ {local}:v1.2.0 as {remote}:v1.2.0 │",
        f"│ 2 │ push │ {remote}:v1.2.0 (local image sha256:0123456789ab; {config}) │",
        f"│ 3 │ tag │ {local}:abc1234 as {remote}:abc1234 │",
        f"│ 4 │ push │ {remote}:abc1234 (no local image {local}:abc1234: the real run stops "
        f"here (invoke images.build); {config}) │",
    ]


def test_images_push_without_an_engine_still_prints_its_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_engine() -> Any:
        raise Exit("No Docker engine answers at the local socket (gone); install Docker.")

    monkeypatch.setattr(image_push.engine, "connect", no_engine)
    monkeypatch.setenv("REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("REGISTRY_PASSWORD", "pw-registry-9")
    images_tasks.push(git_reads(), env="prod", dry_run=True)
    out = capsys.readouterr().out
    assert "pw-registry-9" not in out
    assert plan_lines(out) == [
        "│ 1 │ unknown │ the Docker engine: No Docker engine answers at the local socket (gone); "
        "install Docker │",
        "│ 2 │ push │ ghcr.io/desbordante/desbordante-backend:v1.2.0 (local image not checked; "
        "credentials: REGISTRY_USERNAME / REGISTRY_PASSWORD from the environment) │",
    ]
