"""`invoke secrets.generate [--rotate] [--dry-run]` and `secrets.list` as tasks: the kubeconfig
from the environment (KUBECONFIG_PATH) to the fake API server over HTTPS, the real client.

The dry run prints the plan read from the cluster (create / keep / rotate / recover), writes
nothing and exits 0; the real run executes that plan. Rotation itself, step by step and at
every failure, is tests/unit/test_cluster_secrets.py.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import pytest
from invoke import Context, Exit
from support.fakeapi.connect import grant
from support.fakeapi.server import FakeApiServer
from support.fakeapi.tls import Tls
from support.plans import plan_lines

from desbordante_ops.cluster.kube import names, podexec
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.secrets.rotation import PENDING_KEY, STARTED_AT
from desbordante_ops.cluster.secrets.specs import SPECS
from desbordante_ops.core import plan
from desbordante_ops.core.plan import DRY_RUN
from desbordante_ops.tasks import secrets as secrets_tasks

STAGE = "desbordante-stage"
PG, MQ = names.PostgresSecret.NAME, names.RabbitMQSecret.NAME
FLOWER, API_AUTH = names.FlowerSecret.NAME, names.ApiAuthSecret.NAME

pytestmark = pytest.mark.usefixtures("wide_console")


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


def value(api: FakeApiServer, name: str, key: str = "password") -> str | None:
    raw = ((api.get("Secret", name, STAGE) or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


# --- the dry run -------------------------------------------------------------------------------


def test_dry_run_lists_create_keep_rotate_and_recover_from_the_cluster(
    fake_api: FakeApiServer, admin: Kube, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = {STARTED_AT: "2026-11-20T10:00:00Z"}
    fake_api.seed(secret(PG, {"password": "pw-old-1", PENDING_KEY: "pw-new-2"}, started))
    fake_api.seed(secret(MQ, {"password": "pw-old-3"}))
    fake_api.seed(secret(API_AUTH, {"password": "p", "users": "u"}))
    fake_api.seed(running(names.POSTGRES, "postgres-0"))
    before = {key: fake_api.get("Secret", key, STAGE) for key in (PG, MQ)}
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", rotate="rabbitmq", dry_run=True)
    assert writes(fake_api, seen) == []
    assert len(fake_api.requests) > seen  # it did read the cluster
    assert {key: fake_api.get("Secret", key, STAGE) for key in (PG, MQ)} == before
    out = capsys.readouterr().out
    assert f"secrets.generate in {STAGE} (rotating rabbitmq) ({DRY_RUN})" in out
    assert plan_lines(out) == [
        "│ 1 │ exec │ PostgreSQL (user desbordante) in pod postgres-0: ask which password it "
        "accepts (rotation started at 2026-11-20T10:00:00Z) │",
        f"│ 2 │ replace │ Secret {STAGE}/{PG}: new one accepted -> password := the new one, "
        "pending-password removed, rotated-at stamped; else pending-password removed │",
        f"│ 3 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} (only "
        "when the new password is promoted) │",
        f"│ 4 │ replace │ Secret {STAGE}/{MQ}: new random password stashed as pending-password │",
        "│ 5 │ exec │ RabbitMQ (user desbordante) in the rabbitmq pod (none runs now: the real "
        "run would stop here): set the new password (on stdin) │",
        f"│ 6 │ replace │ Secret {STAGE}/{MQ}: password := the new one, pending-password "
        "removed, rotated-at stamped │",
        f"│ 7 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} │",
        f"│ 8 │ create │ Secret {STAGE}/{FLOWER} (keys password, users (bcrypt); new random "
        "password) │",
        f"│ 9 │ keep │ Secret {STAGE}/{API_AUTH} │",
    ]
    assert not [v for v in ("pw-old-1", "pw-new-2", "pw-old-3") if v in out]


def test_dry_run_finishes_an_unfinished_rotation_of_the_rotated_secret(
    fake_api: FakeApiServer, admin: Kube, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.seed(secret(PG, {"password": "pw-old-1", PENDING_KEY: "pw-new-2"}, {STARTED_AT: "T0"}))
    fake_api.seed(running(names.POSTGRES, "postgres-0"))
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", rotate="postgres", dry_run=True)
    assert writes(fake_api, seen) == []
    assert plan_lines(capsys.readouterr().out)[:3] == [
        "│ 1 │ exec │ PostgreSQL (user desbordante) in pod postgres-0: set the password "
        "stashed at T0 (on stdin) │",
        f"│ 2 │ replace │ Secret {STAGE}/{PG}: password := the new one, pending-password "
        "removed, rotated-at stamped │",
        f"│ 3 │ restart │ deployment/api, deployment/worker, deployment/flower in {STAGE} │",
    ]


def test_on_a_new_cluster_the_dry_run_lists_what_the_run_then_creates(
    fake_api: FakeApiServer, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with plan.watching() as seen:
        secrets_tasks.generate(Context(), env="stage", dry_run=True)
        assert writes(fake_api) == []
        assert fake_api.get("Namespace", STAGE) is None
        rows = plan_lines(capsys.readouterr().out)
        assert rows[0] == f"│ 1 │ create │ namespace {STAGE} (Pod Security: restricted) │"
        assert [row.split(" │ ")[1] for row in rows] == ["create"] * 5
        secrets_tasks.generate(Context(), env="stage")
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert fake_api.get("Namespace", STAGE) is not None
    assert [s["metadata"]["name"] for s in fake_api.all("Secret", STAGE)] == sorted(
        s.name for s in SPECS
    )
    assert {r.method for r in fake_api.writes()} == {"POST"}


def test_without_a_cluster_the_dry_run_says_so_and_the_run_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changed by design: without a connection the plan is the one row saying why (it used to
    list the Secrets as 'created if missing'); the real run stops on that row."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(tmp_path / "missing"))
    secrets_tasks.generate(Context(), env="stage", rotate="flower", dry_run=True)
    (row,) = plan_lines(capsys.readouterr().out)
    assert row.startswith(f"│ 1 │ unknown │ the cluster of stage: No kubeconfig at {tmp_path}")
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(Context(), env="stage", rotate="flower")
    message = str(info.value.message)
    assert message.startswith(f"Cannot go on: the cluster of stage: No kubeconfig at {tmp_path}")
    assert "\n" not in message


def test_as_a_viewer_the_dry_run_says_what_it_may_not_read_and_the_run_stops(
    fake_api: FakeApiServer,
    admin: Kube,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUBECONFIG_PATH", str(grant(admin, tmp_path, "viewer")))
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", dry_run=True)
    assert writes(fake_api, seen) == []
    rows = plan_lines(capsys.readouterr().out)
    assert rows == [
        f"│ {n} │ unknown │ Secret {STAGE}/{spec.name}: HTTP 403 Forbidden │"
        for n, spec in enumerate(SPECS, 1)
    ]
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(Context(), env="stage")
    assert str(info.value.message) == f"Cannot go on: Secret {STAGE}/{PG}: HTTP 403 Forbidden."
    assert writes(fake_api, seen) == []


def test_an_unknown_secret_is_refused_before_reading_anything(
    fake_api: FakeApiServer, stage: Path
) -> None:
    for dry_run in (True, False):
        with pytest.raises(Exit, match="no such secret"):
            secrets_tasks.generate(Context(), env="stage", rotate="redis", dry_run=dry_run)
    assert fake_api.requests == []


# --- the real run --------------------------------------------------------------------------------


def test_rotate_flower_through_the_task_with_no_pod_running(
    fake_api: FakeApiServer, admin: Kube, stage: Path
) -> None:
    secrets_tasks.generate(Context(), env="stage")
    old = value(fake_api, FLOWER)
    admin.apps.create_namespaced_deployment(
        STAGE,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": names.FLOWER},
            "spec": {
                "selector": {"matchLabels": {"app": "flower"}},
                "template": {
                    "metadata": {"labels": {"app": "flower"}},
                    "spec": {"containers": [{"name": "flower", "image": "x"}]},
                },
            },
        },
    )
    assert fake_api.all("Pod", STAGE, names.selector(names.RABBITMQ)) == []
    seen = len(fake_api.requests)
    secrets_tasks.generate(Context(), env="stage", rotate="flower")
    assert value(fake_api, FLOWER) not in (None, old)
    assert writes(fake_api, seen) == [
        f"PUT /api/v1/namespaces/{STAGE}/secrets/{FLOWER}",
        f"PATCH /apis/apps/v1/namespaces/{STAGE}/deployments/flower",
    ]


def test_task_rotation_over_a_dropping_exec_ends_in_one_line(
    fake_api: FakeApiServer, admin: Kube, stage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pod exec factory finds postgres-0; its exec stream cannot start."""
    secrets_tasks.generate(Context(), env="stage")
    fake_api.seed(running(names.POSTGRES, "postgres-0"))
    old = value(fake_api, PG)
    assert old

    def dropping(*args: Any, **kwargs: Any) -> Any:
        raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")

    monkeypatch.setattr(podexec, "stream", dropping)
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(Context(), env="stage", rotate="postgres")
    message = str(info.value.message)
    assert "\n" not in message and "SSLEOFError" in message
    assert f"`psql` in pod {STAGE}/postgres-0 could not start" in message
    assert "PostgreSQL was interrupted" in message and "--rotate postgres` again" in message
    pending = value(fake_api, PG, PENDING_KEY)
    assert pending and value(fake_api, PG) == old  # the pending one, kept
    assert old not in message and pending not in message


def test_api_errors_of_list_and_generate_are_one_line(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer may not read Secrets: the API's 403, one line each."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(grant(admin, tmp_path, "viewer")))
    with pytest.raises(Exit) as listed:
        secrets_tasks.list(Context(), env="stage")
    assert listed.value.message == f"Reading the Secrets of {STAGE} failed: HTTP 403 Forbidden."
    with pytest.raises(Exit) as generated:
        secrets_tasks.generate(Context(), env="stage")
    assert generated.value.message == f"Cannot go on: Secret {STAGE}/{PG}: HTTP 403 Forbidden."


def test_an_unreachable_api_server_is_one_line(
    fake_api_tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeApiServer(fake_api_tls) as gone:
        kubeconfig = gone.kubeconfig_admin(tmp_path / "gone.kubeconfig")
    monkeypatch.setenv("KUBECONFIG_PATH", str(kubeconfig))
    for call in (secrets_tasks.list, secrets_tasks.generate):
        with pytest.raises(Exit) as info:
            call(Context(), env="stage")
        message = str(info.value.message)
        assert "is not reachable" in message and "\n" not in message


def test_list_shows_every_secret_of_the_stack_without_values(
    fake_api: FakeApiServer, stage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_tasks.generate(Context(), env="stage")
    capsys.readouterr()
    secrets_tasks.list(Context(), env="stage")
    out = capsys.readouterr().out
    assert f"Secrets in {STAGE}" in out
    for spec in SPECS:
        password = value(fake_api, spec.name)
        assert spec.name in out and password and password not in out
