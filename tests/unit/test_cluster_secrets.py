"""secrets.generate / secrets.list logic against an in-memory CoreV1Api fake (no cluster)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Any

import bcrypt
import pytest
from invoke import Context, Exit
from support.fake_kube import FakeApps, FakeCore

from desbordante_ops.cluster import kube, names
from desbordante_ops.cluster import secrets as cs
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import secrets as secrets_tasks

NS = "desbordante-stage"
ALL = [s.name for s in cs.SPECS]


@pytest.fixture
def cfg() -> Any:
    return load_config("stage", environ={})


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCore, FakeApps]:
    core, apps = FakeCore(), FakeApps(deployments=names.DEPLOYMENTS)
    fake = kube.Kube(api_client=None, core=core, apps=apps, batch=None, rbac=None)
    monkeypatch.setattr(secrets_tasks.kube, "connect", lambda cfg: fake)
    return core, apps


def all_values(core: FakeCore) -> list[str]:
    return [
        base64.b64decode(v).decode()
        for secret in core.secrets.values()
        for v in secret.data.values()
    ]


class Recorder:
    """A PodExec that records what it was asked to run and answers with a fixed result."""

    def __init__(self, code: int = 0, output: str = "") -> None:
        self.code, self.output = code, output
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]:
        self.calls.append((argv, stdin))
        return self.code, self.output.replace("{stdin}", stdin)


def test_generate_creates_every_secret_with_random_values(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    rows = cs.generate(core, apps, cfg, NS)
    assert rows == [(name, "created") for name in ALL]
    pg = core.value(NS, names.PostgresSecret.NAME, names.PostgresSecret.PASSWORD)
    mq = core.value(NS, names.RabbitMQSecret.NAME, names.RabbitMQSecret.PASSWORD)
    assert len(pg) >= 43 and len(mq) >= 43 and pg != mq
    assert apps.patches == []  # creating restarts nothing


def test_flower_users_line_is_htpasswd_of_the_same_password(cfg: Any) -> None:
    core = FakeCore()
    cs.generate(core, FakeApps(), cfg, NS)
    password = core.value(NS, names.FlowerSecret.NAME, names.FlowerSecret.PASSWORD)
    users = core.value(NS, names.FlowerSecret.NAME, names.FlowerSecret.USERS)
    user, hashed = users.split(":", 1)
    assert user == cfg.value("FLOWER_USER")
    assert hashed.startswith("$2b$") and bcrypt.checkpw(password.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"wrong", hashed.encode())
    assert password not in users


def test_second_run_keeps_existing_values(cfg: Any) -> None:
    core = FakeCore()
    cs.generate(core, FakeApps(), cfg, NS)
    before, first_calls = all_values(core), len(core.calls)
    rows = cs.generate(core, FakeApps(), cfg, NS)
    assert rows == [(name, "kept") for name in ALL]
    assert all_values(core) == before
    second = core.calls[first_calls:]
    assert second == [f"read_secret {name}" for name in ALL]


def test_rotate_postgres_alters_role_then_patches_secret_then_restarts(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    cs.generate(core, apps, cfg, NS)
    old = core.value(NS, names.PostgresSecret.NAME, "password")
    others = {n: all_values(core) for n in ALL}
    recorder = Recorder()

    rows = cs.generate(core, apps, cfg, NS, rotate="postgres", exec_for=lambda spec: recorder)

    new = core.value(NS, names.PostgresSecret.NAME, "password")
    assert new != old
    assert rows[0] == (names.PostgresSecret.NAME, "rotated, restarted api, worker, flower")
    assert rows[1:] == [(name, "kept") for name in ALL[1:]]
    assert others  # the other two secrets keep their values:
    assert core.value(NS, names.RabbitMQSecret.NAME, "password") in others[ALL[1]]
    ((argv, stdin),) = recorder.calls
    assert argv[0] == "psql" and new not in " ".join(argv)
    assert new not in stdin  # only the SCRAM verifier travels, never the password
    verifier = stdin.split("PASSWORD '")[1].split("'")[0]
    assert f'ALTER ROLE "{cfg.value("POSTGRES_USER")}"' in stdin
    _check_scram(verifier, new)
    restarted = [(kind, name) for kind, name, _ in apps.patches]
    assert restarted == [("deployment", "api"), ("deployment", "worker"), ("deployment", "flower")]
    body = apps.patches[0][2]
    assert kube.RESTARTED_AT in body["spec"]["template"]["metadata"]["annotations"]


def _check_scram(verifier: str, password: str) -> None:
    scheme, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = keys.split(":")
    assert scheme == "SCRAM-SHA-256"
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_key) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_rotate_rabbitmq_feeds_password_on_stdin_only(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    cs.generate(core, apps, cfg, NS)
    recorder = Recorder()
    cs.generate(core, apps, cfg, NS, rotate=names.RabbitMQSecret.NAME, exec_for=lambda s: recorder)
    new = core.value(NS, names.RabbitMQSecret.NAME, "password")
    ((argv, stdin),) = recorder.calls
    assert argv == ["rabbitmqctl", "change_password", cfg.value("RABBITMQ_DEFAULT_USER")]
    assert stdin == new + "\n"


def test_rotate_flower_changes_both_keys_and_restarts_flower_only(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    cs.generate(core, apps, cfg, NS)
    old_users = core.value(NS, names.FlowerSecret.NAME, "users")
    recorder = Recorder()
    cs.generate(core, apps, cfg, NS, rotate="flower", exec_for=lambda s: recorder)
    password = core.value(NS, names.FlowerSecret.NAME, "password")
    users = core.value(NS, names.FlowerSecret.NAME, "users")
    assert users != old_users
    assert bcrypt.checkpw(password.encode(), users.split(":", 1)[1].encode())
    assert recorder.calls == []  # Flower keeps no password of its own
    assert [name for _, name, _ in apps.patches] == ["flower"]


def test_failed_rotation_changes_nothing_and_hides_values(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    cs.generate(core, apps, cfg, NS)
    before = all_values(core)
    recorder = Recorder(code=3, output="ERROR: bad input near {stdin}")
    with pytest.raises(Exit) as info:
        cs.generate(core, apps, cfg, NS, rotate="rabbitmq", exec_for=lambda s: recorder)
    assert all_values(core) == before
    assert apps.patches == []
    stdin = recorder.calls[0][1].strip()
    assert stdin not in str(info.value.message)
    assert "********" in str(info.value.message)


def test_unknown_rotate_name_is_a_user_error(cfg: Any) -> None:
    with pytest.raises(Exit, match="no such secret"):
        cs.generate(FakeCore(), FakeApps(), cfg, NS, rotate="redis")


def test_local_env_is_refused() -> None:
    with pytest.raises(Exit, match="stage, prod"):
        secrets_tasks.generate(Context(), env="local")


def test_tasks_never_print_or_log_values(
    fakes: tuple[FakeCore, FakeApps],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core, _ = fakes
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    monkeypatch.setattr(cs, "store_exec_factory", lambda k, ns: lambda spec: recorder)
    c = Context()
    secrets_tasks.generate(c, env="stage")
    secrets_tasks.generate(c, env="stage", rotate="postgres")
    secrets_tasks.list(c, env="stage")
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text
    assert NS in core.namespaces  # namespace created with the PSS labels
    assert core.namespaces[NS].metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "created" in text and "rotated" in text and names.FlowerSecret.USERS in text
    values = all_values(core) + [stdin for _, stdin in recorder.calls]
    assert values
    for value in values:
        assert value.strip() not in text


def test_list_shows_names_keys_and_ages(cfg: Any) -> None:
    core = FakeCore()
    cs.generate(core, FakeApps(), cfg, NS)
    later = core.now.replace(hour=15)
    rows = cs.listing(core, NS, now=later)
    assert rows[0][:3] == (names.PostgresSecret.NAME, "password", "3h")
    assert rows[2][1] == "password, users"
    empty = cs.listing(FakeCore(), NS)
    assert [row[2] for row in empty] == ["missing"] * len(ALL)
