"""secrets.generate / secrets.list logic, and rotation recovery, without a cluster.

The API objects are in-memory fakes (Secrets are replaced with resourceVersion checks, as the
API server does); the stores are a PodExec that plays psql / rabbitmqctl against one stored
password and can drop the connection before or after the change. What psql and rabbitmqctl
really do with our argv and stdin is checked in tests/integration/test_secret_stores.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from invoke import Context, Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from support.fake_kube import FakeApps, FakeCore
from support.fakeapi import FakeApiServer
from support.fakeapi_kube import config_for, connect, grant
from urllib3.exceptions import ProtocolError
from websocket import WebSocketConnectionClosedException

from desbordante_ops.cluster import kube, names, rotation, stores
from desbordante_ops.cluster import secrets as cs
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import secrets as secrets_tasks

NS = "desbordante-stage"
ALL = [s.name for s in cs.SPECS]
PG, MQ, FLOWER = names.PostgresSecret.NAME, names.RabbitMQSecret.NAME, names.FlowerSecret.NAME
DROP = "connection lost (SSLEOFError: EOF occurred in violation of protocol)"


class SecretsApi(FakeCore):
    """FakeCore (Secrets with resourceVersions: a stale replace gets 409, like the server)
    whose `faults[n]` makes the n-th replace (1-based) raise that exception instead."""

    def __init__(self) -> None:
        super().__init__()
        self.replaces = 0
        self.faults: dict[int, BaseException] = {}

    def replace_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        self.replaces += 1
        if self.replaces in self.faults:
            self.calls.append(f"replace_secret {name}")
            raise self.faults[self.replaces]
        return super().replace_namespaced_secret(name, namespace, body)

    def connect_get_namespaced_pod_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pod exec goes through kube.stream, which the tests replace")

    def keys(self, name: str) -> set[str]:
        return set(self.secrets[(NS, name)].data)


class BrokenApps(FakeApps):
    """Restarting a Deployment fails with a dropped connection."""

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any) -> Any:
        raise ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))


class FakeStore:
    """A PodExec playing psql (PostgreSQL) or rabbitmqctl (RabbitMQ) against one password.

    `faults` holds one-shot faults per command ("set" / "check"): "before" drops the exec before
    the command runs, "after" drops it after a set took effect, an int is a failing exit code.
    """

    def __init__(self, kind: str, password: str) -> None:
        self.kind = kind
        self.stored = self._store(password)
        self.faults: dict[str, list[str | int]] = {}
        self.calls: list[tuple[str, list[str], str]] = []

    def _store(self, password: str) -> str:
        return stores.scram_sha256_verifier(password) if self.kind == "postgres" else password

    def accepts(self, password: str) -> bool:
        if self.kind == "postgres":
            return stores.scram_matches(self.stored, password)
        return self.stored == password

    def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]:
        command = "check" if "authenticate_user" in argv or "SELECT" in stdin else "set"
        self.calls.append((command, argv, stdin))
        queue = self.faults.get(command, [])
        fault = queue.pop(0) if queue else None
        if fault == "before":
            raise kube.ExecFailed(f"`{argv[0]}` in pod {NS}/{self.kind}-0: {DROP}")
        if isinstance(fault, int):
            return fault, f"ERROR: failed near {stdin}"
        if command == "set":
            if self.kind == "postgres":
                self.stored = stdin.split("PASSWORD '")[1].split("'")[0]
            else:
                self.stored = stdin.strip()
            if fault == "after":
                raise kube.ExecFailed(f"`{argv[0]}` in pod {NS}/{self.kind}-0: {DROP}")
            return 0, ""
        if self.kind == "postgres":
            return 0, self.stored + "\n"
        if self.accepts(stdin.strip()):
            return 0, "Success\n"
        return 65, f'Error: failed to authenticate user "{argv[-1]}"\nuser - invalid credentials\n'


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


@pytest.fixture
def cfg() -> Any:
    return load_config("stage", environ={})


class Stack:
    """Secrets created in a SecretsApi, plus stores holding the same passwords."""

    def __init__(self, cfg: Any, apps: FakeApps | None = None) -> None:
        self.cfg = cfg
        self.core = SecretsApi()
        self.apps = apps or FakeApps(names.DEPLOYMENTS)
        cs.generate(self.core, FakeApps(), cfg, NS)
        self.stores = {
            "postgres": FakeStore("postgres", self.value(PG)),
            "rabbitmq": FakeStore("rabbitmq", self.value(MQ)),
        }
        self.execs: list[str] = []

    def value(self, name: str, key: str = "password") -> str:
        return self.core.value(NS, name, key)

    def exec_for(self, spec: Any) -> kube.PodExec:
        self.execs.append(spec.alias)
        return self.stores[spec.store]

    def generate(self, rotate: str | None = None) -> list[tuple[str, str]]:
        return cs.generate(self.core, self.apps, self.cfg, NS, rotate, self.exec_for)

    def consistent(self, alias: str, name: str) -> bool:
        """The Secret holds exactly one password, and it is the one the store accepts."""
        return rotation.PENDING_KEY not in self.core.keys(name) and self.stores[alias].accepts(
            self.value(name)
        )

    def secrets_seen(self) -> list[str]:
        values = all_values(self.core)
        values += [stdin.strip() for s in self.stores.values() for _, _, stdin in s.calls]
        return [v for v in values if v]


@pytest.fixture
def stack(cfg: Any) -> Stack:
    return Stack(cfg)


def fails(stack: Stack, rotate: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    """Run generate expecting a one-line Exit; returns message + everything printed."""
    with pytest.raises(Exit) as info:
        stack.generate(rotate)
    message = str(info.value.message)
    assert "\n" not in message and "Traceback" not in message
    printed = capsys.readouterr().out
    for value in stack.secrets_seen():
        assert value not in message and value not in printed
    return message


def restarted(apps: FakeApps) -> list[str]:
    return [name for _, name, _ in apps.patches]


# --- create, keep, list ----------------------------------------------------------------------


def test_generate_creates_every_secret_with_random_values(cfg: Any) -> None:
    core, apps = FakeCore(), FakeApps(names.DEPLOYMENTS)
    rows = cs.generate(core, apps, cfg, NS)
    assert rows == [(name, "created") for name in ALL]
    pg = core.value(NS, PG, names.PostgresSecret.PASSWORD)
    mq = core.value(NS, MQ, names.RabbitMQSecret.PASSWORD)
    assert len(pg) >= 43 and len(mq) >= 43 and pg != mq
    assert apps.patches == []  # creating restarts nothing


def test_flower_users_line_is_htpasswd_of_the_same_password(cfg: Any) -> None:
    core = FakeCore()
    cs.generate(core, FakeApps(), cfg, NS)
    password = core.value(NS, FLOWER, names.FlowerSecret.PASSWORD)
    users = core.value(NS, FLOWER, names.FlowerSecret.USERS)
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


def test_list_shows_names_keys_and_ages(cfg: Any) -> None:
    core = FakeCore()
    cs.generate(core, FakeApps(), cfg, NS)
    later = core.now.replace(hour=15)
    rows = cs.listing(core, NS, now=later)
    assert rows[0][:3] == (PG, "password", "3h")
    assert rows[2][1] == "password, users"
    empty = cs.listing(FakeCore(), NS)
    assert [row[2] for row in empty] == ["missing"] * len(ALL)


def test_unknown_rotate_name_is_a_user_error(cfg: Any) -> None:
    with pytest.raises(Exit, match="no such secret"):
        cs.generate(FakeCore(), FakeApps(), cfg, NS, rotate="redis")


def test_local_env_is_refused() -> None:
    with pytest.raises(Exit, match="stage, prod"):
        secrets_tasks.generate(Context(), env="local")


# --- rotation: the commands ------------------------------------------------------------------


def test_rotate_postgres_alters_role_then_replaces_secret_then_restarts(stack: Stack) -> None:
    old = stack.value(PG)
    others = (stack.value(MQ), stack.value(FLOWER))
    rows = stack.generate("postgres")
    new = stack.value(PG)
    assert new != old
    assert rows[0] == (PG, "rotated, restarted api, worker, flower")
    assert rows[1:] == [(name, "kept") for name in ALL[1:]]
    assert (stack.value(MQ), stack.value(FLOWER)) == others
    ((command, argv, stdin),) = stack.stores["postgres"].calls
    assert command == "set" and argv[0] == "psql" and new not in " ".join(argv)
    assert new not in stdin  # only the SCRAM verifier travels, never the password
    assert f'ALTER ROLE "{stack.cfg.value("POSTGRES_USER")}"' in stdin
    _check_scram(stdin.split("PASSWORD '")[1].split("'")[0], new)
    assert stack.consistent("postgres", PG)
    assert [(kind, name) for kind, name, _ in stack.apps.patches] == [
        ("deployment", "api"),
        ("deployment", "worker"),
        ("deployment", "flower"),
    ]
    body = stack.apps.patches[0][2]
    assert kube.RESTARTED_AT in body["spec"]["template"]["metadata"]["annotations"]
    # stash (pending key) then promote: two writes, each on the version it read
    assert stack.core.calls.count(f"replace_secret {PG}") == 2
    assert stack.core.secrets[(NS, PG)].metadata.annotations.get(rotation.STARTED_AT) is None


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


def test_scram_matches_only_the_password_it_was_made_from() -> None:
    verifier = stores.scram_sha256_verifier("right")
    assert stores.scram_matches(verifier, "right")
    assert not stores.scram_matches(verifier, "wrong")
    assert not stores.scram_matches("md5abcdef", "right")
    assert not stores.scram_matches("", "right")


def test_rotate_rabbitmq_feeds_password_on_stdin_only(stack: Stack) -> None:
    stack.generate(MQ)
    new = stack.value(MQ)
    ((_, argv, stdin),) = stack.stores["rabbitmq"].calls
    assert argv == ["rabbitmqctl", "change_password", stack.cfg.value("RABBITMQ_DEFAULT_USER")]
    assert stdin == new + "\n"
    assert stack.consistent("rabbitmq", MQ)


def test_rotate_flower_needs_no_store_pod(stack: Stack) -> None:
    old_users = stack.value(FLOWER, "users")
    rows = stack.generate("flower")
    password, users = stack.value(FLOWER), stack.value(FLOWER, "users")
    assert rows[2] == (FLOWER, "rotated, restarted flower")
    assert users != old_users
    assert bcrypt.checkpw(password.encode(), users.split(":", 1)[1].encode())
    assert stack.execs == []  # no pod exec asked for at all
    assert restarted(stack.apps) == ["flower"]


def test_rotate_flower_through_the_task_with_no_pod_running(
    cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = SecretsApi()  # no pods at all: rabbitmq is not running
    cs.generate(core, FakeApps(), cfg, NS)
    k = kube.Kube(
        api_client=None, core=core, apps=FakeApps(names.DEPLOYMENTS), batch=None, rbac=None
    )
    monkeypatch.setattr(secrets_tasks.kube, "connect", lambda cfg: k)
    secrets_tasks.generate(Context(), env="stage", rotate="flower")
    assert [n for _, n, _ in k.apps.patches] == ["flower"]


# --- rotation: failures at every step, and the re-run --------------------------------------


def test_drop_before_the_store_changed_undoes_the_stash(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = stack.value(PG)
    stack.stores["postgres"].faults = {"set": ["before"]}
    message = fails(stack, "postgres", capsys)
    assert "PostgreSQL failed" in message and DROP in message
    assert "it still has the old one, so nothing was changed" in message
    assert stack.value(PG) == before and stack.consistent("postgres", PG)
    assert stack.apps.patches == []


def test_failing_command_changes_nothing_and_hides_values(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_values(stack.core)
    stack.stores["rabbitmq"].faults = {"set": [3]}  # output echoes stdin (the password)
    message = fails(stack, "rabbitmq", capsys)
    assert "exited 3" in message and "********" in message
    assert all_values(stack.core) == before
    assert stack.apps.patches == []


def test_drop_after_the_store_changed_is_finished_at_once(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.stores["postgres"].faults = {"set": ["after"]}
    rows = stack.generate("postgres")
    assert rows[0] == (PG, "rotated, restarted api, worker, flower")
    assert stack.consistent("postgres", PG)
    out = capsys.readouterr().out
    assert "has the new password anyway" in out
    assert all(value not in out for value in stack.secrets_seen())


@pytest.mark.parametrize("alias, name", [("postgres", PG), ("rabbitmq", MQ)])
def test_drop_after_the_change_with_store_unreachable_then_rerun_finishes(
    stack: Stack, capsys: pytest.CaptureFixture[str], alias: str, name: str
) -> None:
    old = stack.value(name)
    stack.stores[alias].faults = {"set": ["after"], "check": ["before"]}
    message = fails(stack, alias, capsys)
    assert "was interrupted" in message and "asking which one it has now failed too" in message
    assert f"kept in Secret {name} as pending-password" in message
    assert f"invoke secrets.generate --env stage --rotate {alias}` again" in message
    # the state the message describes: the store has the NEW one, the Secret still the old one
    assert stack.value(name) == old and not stack.stores[alias].accepts(old)
    assert stack.stores[alias].accepts(stack.value(name, rotation.PENDING_KEY))
    assert stack.apps.patches == []
    listed = dict((row[0], row[3]) for row in cs.listing(stack.core, NS))
    assert "unfinished rotation since" in listed[name]

    rows = stack.generate(alias)
    assert dict(rows)[name] == "rotated (earlier attempt), restarted api, worker, flower"
    assert stack.consistent(alias, name) and stack.value(name) != old


@pytest.mark.parametrize("alias, name", [("postgres", PG), ("rabbitmq", MQ)])
def test_plain_generate_finishes_a_rotation_the_store_already_has(
    stack: Stack, capsys: pytest.CaptureFixture[str], alias: str, name: str
) -> None:
    stack.stores[alias].faults = {"set": ["after"], "check": ["before"]}
    fails(stack, alias, capsys)
    rows = dict(stack.generate())  # e.g. bootstrap, or a rotation of another secret
    assert rows[name] == "unfinished rotation finished, restarted api, worker, flower"
    assert stack.consistent(alias, name)
    assert stack.stores[alias].calls[-1][0] == "check"  # checked, did not set again


def test_plain_generate_undoes_a_rotation_the_store_never_got(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = stack.value(MQ)
    stack.stores["rabbitmq"].faults = {"set": ["before"], "check": ["before"]}
    message = fails(stack, "rabbitmq", capsys)
    assert "whether" not in message and "RabbitMQ was interrupted" in message
    stack.stores["rabbitmq"].faults = {"check": [70]}  # rabbitmqctl cannot reach the node
    message = fails(stack, None, capsys)
    assert message.startswith("Cannot tell which password RabbitMQ has (`rabbitmqctl` exited 70")
    assert "--rotate rabbitmq` again to finish" in message
    rows = stack.generate()
    assert rows[1] == (MQ, "unfinished rotation undone (the store kept the old password)")
    assert stack.value(MQ) == before and stack.consistent("rabbitmq", MQ)
    assert stack.apps.patches == []
    checks = [stdin for cmd, _, stdin in stack.stores["rabbitmq"].calls if cmd == "check"]
    assert checks[-1] == before + "\n"  # rabbitmqctl authenticate_user, password on stdin


def test_store_with_a_third_password_is_reported_and_rotate_repairs_it(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.stores["postgres"].faults = {"set": ["after"], "check": ["before"]}
    fails(stack, "postgres", capsys)
    stack.stores["postgres"].stored = stores.scram_sha256_verifier("changed-by-hand")
    message = fails(stack, None, capsys)
    assert "accepts neither" in message and "--rotate postgres" in message
    stack.generate("postgres")
    assert stack.consistent("postgres", PG)


def test_failed_stash_changes_nothing(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    before = all_values(stack.core)
    stack.core.faults = {1: ProtocolError("Connection aborted.", ConnectionResetError())}
    message = fails(stack, "postgres", capsys)
    assert "Saving the new password in Secret" in message and "nothing was changed" in message
    assert all_values(stack.core) == before
    assert stack.stores["postgres"].calls == []


def test_failed_promotion_says_the_store_has_the_new_one_and_rerun_finishes(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    old = stack.value(PG)
    stack.core.faults = {2: ssl.SSLEOFError(8, "EOF occurred in violation of protocol")}
    message = fails(stack, "postgres", capsys)
    assert message.startswith("PostgreSQL has the NEW password; updating Secret")
    assert "SSLEOFError" in message and "--rotate postgres` again to finish" in message
    assert stack.value(PG) == old and not stack.stores["postgres"].accepts(old)
    stack.generate("postgres")
    assert stack.consistent("postgres", PG)


def test_concurrent_change_of_the_secret_is_not_overwritten(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    class Racing(FakeStore):
        """Someone else writes the Secret while the store is being changed."""

        def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]:
            result = super().__call__(argv, stdin)
            stored = stack.core.secrets[(NS, PG)]
            stack.core.replace_namespaced_secret(PG, NS, copy.deepcopy(stored))
            return result

    stack.stores["postgres"] = Racing("postgres", stack.value(PG))
    message = fails(stack, "postgres", capsys)
    assert "HTTP 409 Conflict" in message and "to finish" in message


def test_failed_restart_names_the_command_that_finishes(
    cfg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(cfg, apps=BrokenApps(names.DEPLOYMENTS))
    message = fails(stack, "rabbitmq", capsys)
    assert message.startswith("The new rabbitmq password is in RabbitMQ and Secret")
    assert "restarting its consumers failed (ProtocolError" in message
    assert f"kubectl -n {NS} rollout restart deployment/api deployment/worker" in message
    assert stack.consistent("rabbitmq", MQ)


def test_no_running_store_pod_changes_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_values(stack.core)

    def no_pod(spec: Any) -> kube.PodExec:
        raise Exit(f"No running pod matches {names.selector(names.POSTGRES)} in {NS}.")

    with pytest.raises(Exit, match="nothing was changed"):
        cs.generate(stack.core, stack.apps, stack.cfg, NS, "postgres", no_pod)
    assert all_values(stack.core) == before
    assert rotation.PENDING_KEY not in stack.core.keys(PG)


# --- pod_exec: transport errors become one line ----------------------------------------------


class FakeResp:
    """The WSClient surface pod_exec uses; FAIL_IN names the method that raises ERROR."""

    def __init__(self, fail_in: str = "", error: BaseException | None = None, open_: bool = False):
        self.fail_in, self.error, self.open = fail_in, error, open_
        self.closed = False

    def _maybe(self, name: str) -> None:
        if self.fail_in == name and self.error is not None:
            raise self.error

    def write_stdin(self, data: str) -> None:
        self._maybe("write_stdin")

    def close_channel(self, channel: int) -> None:
        self._maybe("close_channel")

    def run_forever(self, timeout: float) -> None:
        self._maybe("run_forever")

    def read_stdout(self, timeout: float) -> str:
        return "out"

    def read_stderr(self, timeout: float) -> str:
        return ""

    @property
    def returncode(self) -> int | None:
        if self.open:
            return None
        if self.fail_in == "returncode":
            raise TypeError("'NoneType' object is not subscriptable")  # empty status channel
        return 0

    def close(self) -> None:
        self.closed = True


def exec_with(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> kube.PodExec:
    def fake_stream(*args: Any, **kwargs: Any) -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(kube, "stream", fake_stream)
    k = kube.Kube(api_client=None, core=SecretsApi(), apps=None, batch=None, rbac=None)
    return kube.pod_exec(k, NS, "postgres-0", container="postgres")


@pytest.mark.parametrize(
    "outcome, expected",
    [
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "could not start: SSLEOF"),
        (ApiException(status=0, reason="Handshake status 403 Forbidden\n-+-+- {}"), "403"),
        (ProtocolError("Connection aborted."), "could not start: ProtocolError"),
        (
            FakeResp(
                "run_forever", WebSocketConnectionClosedException("socket is already closed.")
            ),
            "connection lost (WebSocketConnectionClosedException",
        ),
        (FakeResp("write_stdin", BrokenPipeError(32, "Broken pipe")), "BrokenPipeError"),
        (FakeResp("run_forever", TimeoutError("timed out")), "connection lost (TimeoutError"),
        (FakeResp("returncode"), "gave no exit status"),
        (FakeResp(open_=True), "gave no exit status within 60 s"),
    ],
)
def test_pod_exec_transport_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, outcome: Any, expected: str
) -> None:
    run = exec_with(monkeypatch, outcome)
    with pytest.raises(kube.ExecFailed) as info:
        run(["psql"], "secret-stdin")
    message = str(info.value)
    assert expected in message and "\n" not in message and "secret-stdin" not in message
    assert message.startswith(f"`psql` in pod {NS}/postgres-0")
    if isinstance(outcome, FakeResp):
        assert outcome.closed


def test_pod_exec_returns_code_and_output(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exec_with(monkeypatch, FakeResp())(["true"], "") == (0, "out")


def running_pod(name: str, component: str) -> Any:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name, labels={names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: component}
        ),
        status=k8s.V1PodStatus(phase="Running"),
    )


@pytest.fixture
def task_cluster(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[kube.Kube]:
    core = SecretsApi()
    core.pods = [running_pod("postgres-0", names.POSTGRES)]
    k = kube.Kube(
        api_client=None, core=core, apps=FakeApps(names.DEPLOYMENTS), batch=None, rbac=None
    )
    monkeypatch.setattr(secrets_tasks.kube, "connect", lambda cfg: k)
    yield k


def test_task_rotation_over_a_dropping_exec_ends_in_one_line(
    task_cluster: kube.Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = task_cluster.core
    secrets_tasks.generate(Context(), env="stage")
    before = all_values(core)
    exec_with(monkeypatch, ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(Context(), env="stage", rotate="postgres")
    message = str(info.value.message)
    assert "\n" not in message and "SSLEOFError" in message
    assert "PostgreSQL was interrupted" in message and "could not start" in message
    assert "--rotate postgres` again" in message
    assert all(value not in message for value in all_values(core))
    assert [v for v in all_values(core) if v not in before]  # the pending one, kept


def test_api_errors_of_list_and_generate_are_one_line(
    task_cluster: kube.Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(task_cluster.core, "read_namespaced_secret", forbidden)
    for call in (secrets_tasks.list, secrets_tasks.generate):
        with pytest.raises(Exit) as info:
            call(Context(), env="stage")
        assert str(info.value.message).endswith(
            "Secrets of desbordante-stage failed: HTTP 403 Forbidden."
        )


def test_tasks_never_print_or_log_values(
    task_cluster: kube.Kube,
    cfg: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = task_cluster.core
    caplog.set_level(logging.DEBUG)
    c = Context()
    secrets_tasks.generate(c, env="stage")
    seen = set(all_values(core))
    store = FakeStore("postgres", core.value(NS, PG, "password"))
    store.faults = {"set": ["after"], "check": ["before"]}
    monkeypatch.setattr(cs, "store_exec_factory", lambda k, ns: lambda spec: store)
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(c, env="stage", rotate="postgres")
    secrets_tasks.list(c, env="stage")
    seen |= set(all_values(core))  # now with the pending one
    secrets_tasks.generate(c, env="stage", rotate="postgres")
    secrets_tasks.list(c, env="stage")
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text + str(info.value.message)
    assert NS in core.namespaces  # namespace created with the PSS labels
    assert core.namespaces[NS].metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "created" in text and "rotated" in text and "pending-password" in text
    seen |= {stdin.strip() for _, _, stdin in store.calls}
    assert len(seen) > 5
    for value in seen:
        assert value not in text


# --- through the real kubernetes client, as a devops user (tests/support/fakeapi.py) --------


def test_devops_rotation_survives_a_drop_through_the_real_client(
    fake_api: FakeApiServer, admin: kube.Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secret writes are PUTs with the resourceVersion read; RBAC lets devops do all of it."""
    path = grant(admin, tmp_path, "devops")
    cfg, devops = config_for(path), connect(path)
    cs.ensure_secrets(cfg, devops)

    def value(key: str = "password") -> str | None:
        secret = admin.core.read_namespaced_secret(PG, NS)
        raw = (secret.data or {}).get(key)
        return None if raw is None else base64.b64decode(raw).decode()

    old = value()
    assert old
    store = FakeStore("postgres", old)
    store.faults = {"set": ["after"], "check": ["before"]}
    with pytest.raises(Exit, match="again to finish"):
        cs.generate(devops.core, devops.apps, cfg, NS, "postgres", lambda spec: store)
    pending = value(rotation.PENDING_KEY)
    assert value() == old and pending and store.accepts(pending)
    puts = [r for r in fake_api.requests if r.method == "PUT"]
    assert [r.path.split("?")[0] for r in puts] == [f"/api/v1/namespaces/{NS}/secrets/{PG}"]

    rows = cs.generate(devops.core, devops.apps, cfg, NS, "postgres", lambda spec: store)
    assert rows[0] == (PG, "rotated (earlier attempt)")  # no Deployments here to restart
    assert value() == pending and value(rotation.PENDING_KEY) is None
    assert all(r.code == 200 for r in fake_api.requests if r.method == "PUT")
    printed = capsys.readouterr().out
    assert old not in printed and pending not in printed
