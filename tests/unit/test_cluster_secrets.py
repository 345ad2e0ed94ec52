"""secrets.generate / secrets.list on the fake API server: create, keep, list, and a rotation
that is safe at every step (stash, set, promote, restart), recovery of an unfinished one.

The cluster is tests/support/fakeapi (the real kubernetes client; a Secret's replace carries the
resourceVersion it read and a stale one gets 409; Deployments get pods from the simulated
controllers). A dropped API connection is injected under the real client, at its HTTP pool.
Pod exec is not modeled by the fake, so the password stores are a PodExec (a test double of the
STORE, not of Kubernetes) playing psql / rabbitmqctl against one stored password; it can drop
the connection before or after the change. What psql and rabbitmqctl really do with our argv
and stdin is checked in tests/integration/test_secret_stores.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from invoke import Context, Exit
from kubernetes.client.exceptions import ApiException
from support.fakeapi.connect import config_for, connect_with, grant, kube_for
from support.fakeapi.k3s import Cluster, config, prepare
from support.fakeapi.server import FakeApiServer
from urllib3.exceptions import ProtocolError
from websocket import WebSocketConnectionClosedException

from desbordante_ops.cluster.kube import names, podexec
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import RESTARTED_AT
from desbordante_ops.cluster.kube.podexec import ExecFailed, PodExec, pod_exec
from desbordante_ops.cluster.secrets import generate, stores
from desbordante_ops.cluster.secrets.generate import ensure_secrets, generate_plan, listing
from desbordante_ops.cluster.secrets.rotation import PENDING_KEY, PROMOTED, STARTED_AT
from desbordante_ops.cluster.secrets.specs import ROTATED_AT, SPECS, SecretSpec
from desbordante_ops.core import plan
from desbordante_ops.core.plan import Plan, Seen
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.tasks import secrets as secrets_tasks

NS = "desbordante-stage"
ALL = [s.name for s in SPECS]
PG, MQ = names.PostgresSecret.NAME, names.RabbitMQSecret.NAME
FLOWER, API_AUTH = names.FlowerSecret.NAME, names.ApiAuthSecret.NAME
DROP = "connection lost (SSLEOFError: EOF occurred in violation of protocol)"
CONSUMERS = f"deployment/api, deployment/worker, deployment/flower in {NS}"


def dropped() -> ProtocolError:
    """What urllib3 raises when the API server's connection drops mid-request."""
    return ProtocolError("Connection aborted.", ssl.SSLEOFError(8, "EOF occurred in violation"))


class Drops:
    """The HTTP pool of a Kube's real client with faults: the n-th request (1-based) of METHOD
    whose URL contains PART raises ERROR instead of reaching the server."""

    def __init__(self, k: Kube) -> None:
        rest = k.api_client.rest_client
        self.inner = rest.pool_manager
        rest.pool_manager = self
        self.faults: dict[tuple[str, str], dict[int, BaseException]] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def fail(self, method: str, part: str, nth: int, error: BaseException) -> None:
        self.faults.setdefault((method, part), {})[nth] = error

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        for (wanted, part), faults in self.faults.items():
            if method == wanted and part in url:
                count = self.counts[(wanted, part)] = self.counts.get((wanted, part), 0) + 1
                if count in faults:
                    raise faults[count]
        return self.inner.request(method, url, *args, **kwargs)


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
            raise ExecFailed(f"`{argv[0]}` in pod {NS}/{self.kind}-0: {DROP}")
        if isinstance(fault, int):
            return fault, f"ERROR: failed near {stdin}"
        if command == "set":
            if self.kind == "postgres":
                self.stored = stdin.split("PASSWORD '")[1].split("'")[0]
            else:
                self.stored = stdin.strip()
            if fault == "after":
                raise ExecFailed(f"`{argv[0]}` in pod {NS}/{self.kind}-0: {DROP}")
            return 0, ""
        if self.kind == "postgres":
            return 0, self.stored + "\n"
        if self.accepts(stdin.strip()):
            return 0, "Success\n"
        return 65, f'Error: failed to authenticate user "{argv[-1]}"\nuser - invalid credentials\n'


def secret_value(server: FakeApiServer, name: str, key: str = "password") -> str | None:
    stored = server.get("Secret", name, NS)
    raw = ((stored or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


def all_values(server: FakeApiServer) -> list[str]:
    return [
        base64.b64decode(v).decode()
        for secret in server.all("Secret", NS)
        for v in (secret.get("data") or {}).values()
    ]


def labels_of(component: str) -> dict[str, str]:
    return {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: component}


def deployment(name: str) -> dict[str, Any]:
    """A Deployment of the stack as deploy leaves it (Pod Security restricted met)."""
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels_of(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels_of(name)},
            "template": {
                "metadata": {"labels": labels_of(name)},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {"name": name, "image": "backend:v1", "securityContext": restricted}
                    ],
                },
            },
        },
    }


def running_pod(name: str, component: str, namespace: str = NS) -> dict[str, Any]:
    """A Running pod of COMPONENT, as its StatefulSet's kubelet reports it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels_of(component)},
        "spec": {"containers": [{"name": component, "image": "x"}]},
        "status": {"phase": "Running"},
    }


def pods_of(server: FakeApiServer, component: str) -> list[str]:
    return [p["metadata"]["name"] for p in server.all("Pod", NS, names.selector(component))]


class Stack:
    """Stage on a fake k3s: namespace and Secrets as secrets.generate makes them, the
    Deployments that read the passwords (with their pods), the store pods running, and stores
    holding the passwords the Secrets hold."""

    def __init__(self, k3s: Cluster) -> None:
        self.k3s, self.server, self.k = k3s, k3s.server, k3s.admin
        self.cfg: EnvConfig = prepare(self.k, "stage")
        for name in names.DEPLOYMENTS:
            self.server.create_as(deployment(name), "desbordante-ops")
        for component in (names.POSTGRES, names.RABBITMQ):
            self.server.seed(running_pod(f"{component}-0", component))
        self.stores = {
            "postgres": FakeStore("postgres", self.value(PG)),
            "rabbitmq": FakeStore("rabbitmq", self.value(MQ)),
        }
        self.execs: list[str] = []
        self.drops = Drops(self.k)
        self.runs: list[Seen] = []

    def value(self, name: str, key: str = "password") -> str:
        found = secret_value(self.server, name, key)
        assert found is not None, f"{name} has no {key}"
        return found

    def keys(self, name: str) -> set[str]:
        return set((self.server.get("Secret", name, NS) or {}).get("data") or {})

    def exec_for(self, spec: SecretSpec) -> PodExec:
        self.execs.append(spec.alias)
        assert spec.store is not None
        return self.stores[spec.store]

    def plan(self, rotate: str | None = None) -> Plan:
        return generate_plan(self.cfg, self.k, rotate, self.exec_for)

    def generate(self, rotate: str | None = None, dry_run: bool = False) -> Seen:
        """Build and execute the plan of `secrets.generate [--rotate ROTATE]`; what it did."""
        with plan.watching() as seen:
            try:
                plan.execute(self.plan(rotate), dry_run)
            finally:
                self.runs += seen
        return seen[-1]

    def consistent(self, alias: str, name: str) -> bool:
        """The Secret holds exactly one password, and it is the one the store accepts."""
        return PENDING_KEY not in self.keys(name) and self.stores[alias].accepts(self.value(name))

    def secrets_seen(self) -> list[str]:
        values = all_values(self.server)
        values += [stdin.strip() for s in self.stores.values() for _, _, stdin in s.calls]
        return [v for v in values if v]

    def restarts(self) -> list[str]:
        """The Deployments patched (restarted), in order."""
        prefix = f"/apis/apps/v1/namespaces/{NS}/deployments/"
        return [
            r.path.split("?")[0].removeprefix(prefix)
            for r in self.server.writes("PATCH")
            if r.path.startswith(prefix)
        ]

    def secret_puts(self, name: str) -> list[int]:
        """The HTTP codes of the replaces of Secret NAME that reached the server."""
        path = f"/api/v1/namespaces/{NS}/secrets/{name}"
        return [r.code for r in self.server.writes("PUT") if r.path.split("?")[0] == path]


@pytest.fixture
def stack(k3s: Cluster) -> Stack:
    return Stack(k3s)


def fails(stack: Stack, rotate: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    """Run generate expecting a one-line Exit; returns its message (no value in it or printed)."""
    with pytest.raises(Exit) as info:
        stack.generate(rotate)
    message = str(info.value.message)
    assert "\n" not in message and "Traceback" not in message
    printed = capsys.readouterr().out
    for value in stack.secrets_seen():
        assert value not in message and value not in printed
    return message


def twice(server: FakeApiServer, build: Callable[[], Plan]) -> tuple[Seen, Seen]:
    """The dry run (which must write nothing) and then the real run of the plan BUILD makes,
    each built from the state as it is then."""
    with plan.watching() as seen:
        before = len(server.writes())
        plan.execute(build(), dry_run=True)
        assert server.writes()[before:] == []
        plan.execute(build())
    return seen[0], seen[1]


def keep(name: str) -> tuple[str, str]:
    return ("keep", f"Secret {NS}/{name}")


# --- create, keep, list ----------------------------------------------------------------------


def test_generate_creates_the_namespace_and_every_secret_with_random_values(k3s: Cluster) -> None:
    plan.execute(generate_plan(config("stage"), k3s.admin))
    namespace = k3s.server.get("Namespace", NS)
    assert namespace is not None
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert sorted(s["metadata"]["name"] for s in k3s.server.all("Secret", NS)) == sorted(ALL)
    pg, mq = secret_value(k3s.server, PG), secret_value(k3s.server, MQ)
    assert pg and mq and len(pg) >= 43 and len(mq) >= 43 and pg != mq
    # creating writes the namespace and the Secrets, nothing else (no restart)
    assert [r.method for r in k3s.server.writes()] == ["POST"] * 5


def test_rotating_a_secret_that_does_not_exist_yet_creates_it(k3s: Cluster) -> None:
    def no_exec(spec: SecretSpec) -> PodExec:
        raise AssertionError(f"creating {spec.name} needs no store")

    with plan.watching() as seen:
        plan.execute(generate_plan(config("stage"), k3s.admin, "postgres", no_exec))
    assert seen[0].rows[1:3] == [
        ("create", f"Secret {NS}/{PG} (keys password; new random password)"),
        ("note", "postgres does not exist yet: created, not rotated"),
    ]
    assert seen[0].ran == seen[0].runnable and secret_value(k3s.server, PG)


def test_flower_users_line_is_htpasswd_of_the_same_password(k3s: Cluster) -> None:
    cfg = prepare(k3s.admin, "stage")
    password = secret_value(k3s.server, FLOWER, names.FlowerSecret.PASSWORD)
    users = secret_value(k3s.server, FLOWER, names.FlowerSecret.USERS)
    assert password and users
    user, hashed = users.split(":", 1)
    assert user == cfg.value("FLOWER_USER")
    assert hashed.startswith("$2b$") and bcrypt.checkpw(password.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"wrong", hashed.encode())
    assert password not in users


def test_second_run_keeps_existing_values_and_only_reads(k3s: Cluster) -> None:
    cfg = prepare(k3s.admin, "stage")
    before, seen = all_values(k3s.server), len(k3s.server.requests)
    with plan.watching() as runs:
        plan.execute(generate_plan(cfg, k3s.admin))
    assert runs[0].rows == [keep(name) for name in ALL] and runs[0].runnable == []
    assert all_values(k3s.server) == before
    assert [f"{r.method} {r.path}" for r in k3s.server.requests[seen:]] == [
        f"GET /api/v1/namespaces/{NS}",
        *[f"GET /api/v1/namespaces/{NS}/secrets/{name}" for name in ALL],
    ]


def test_list_shows_names_keys_and_ages_never_values(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    created = dt.datetime.fromisoformat(
        k3s.server.get("Secret", PG, NS)["metadata"]["creationTimestamp"]  # type: ignore[index]
    )
    rows = listing(k3s.admin.core, NS, now=created + dt.timedelta(hours=3, minutes=5))
    assert [row[0] for row in rows] == ALL
    assert rows[0][:3] == (PG, "password", "3h")
    assert rows[2][1] == "password, users"
    assert not {cell for row in rows for cell in row} & set(all_values(k3s.server))
    empty = listing(k3s.admin.core, "desbordante-prod")
    assert [row[2] for row in empty] == ["missing"] * len(ALL)


def test_unknown_rotate_name_is_refused_before_reading_anything(k3s: Cluster) -> None:
    before = len(k3s.server.requests)
    with pytest.raises(Exit, match="no such secret; use one of: postgres, rabbitmq, flower"):
        generate_plan(config("stage"), k3s.admin, rotate="redis")
    assert len(k3s.server.requests) == before


def test_local_env_is_refused() -> None:
    with pytest.raises(Exit, match="stage, prod"):
        secrets_tasks.generate(Context(), env="local")


# --- rotation: the commands ------------------------------------------------------------------


def test_rotate_postgres_stashes_alters_the_role_promotes_then_restarts(stack: Stack) -> None:
    old = stack.value(PG)
    others = (stack.value(MQ), stack.value(FLOWER))
    api_pods = pods_of(stack.server, names.API)
    seen = stack.generate("postgres")
    assert seen.rows == [
        ("replace", f"Secret {NS}/{PG}: new random password stashed as pending-password"),
        (
            "exec",
            "PostgreSQL (user desbordante) in pod postgres-0: set the new password (on stdin)",
        ),
        ("replace", f"Secret {NS}/{PG}: {PROMOTED}"),
        ("restart", CONSUMERS),
        keep(MQ),
        keep(FLOWER),
        keep(API_AUTH),
    ]
    assert seen.ran == seen.runnable
    new = stack.value(PG)
    assert new != old and (stack.value(MQ), stack.value(FLOWER)) == others
    ((command, argv, stdin),) = stack.stores["postgres"].calls
    assert command == "set" and argv[0] == "psql" and new not in " ".join(argv)
    assert new not in stdin  # only the SCRAM verifier travels, never the password
    assert f'ALTER ROLE "{stack.cfg.value("POSTGRES_USER")}"' in stdin
    _check_scram(stdin.split("PASSWORD '")[1].split("'")[0], new)
    assert stack.consistent("postgres", PG)
    # stash (pending key) then promote: two replaces, each on the version it read
    assert stack.secret_puts(PG) == [200, 200]
    annotations = stack.server.get("Secret", PG, NS)["metadata"]["annotations"]  # type: ignore[index]
    assert STARTED_AT not in annotations and ROTATED_AT in annotations
    assert stack.restarts() == ["api", "worker", "flower"]
    api = stack.server.get("Deployment", "api", NS)
    assert RESTARTED_AT in api["spec"]["template"]["metadata"]["annotations"]  # type: ignore[index]
    assert pods_of(stack.server, names.API) != api_pods  # the pods were replaced


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


def test_rotate_rabbitmq_by_its_secret_name_feeds_the_password_on_stdin_only(
    stack: Stack,
) -> None:
    stack.generate(MQ)
    new = stack.value(MQ)
    ((_, argv, stdin),) = stack.stores["rabbitmq"].calls
    assert argv == ["rabbitmqctl", "change_password", stack.cfg.value("RABBITMQ_DEFAULT_USER")]
    assert stdin == new + "\n"
    assert stack.consistent("rabbitmq", MQ)
    assert stack.restarts() == ["api", "worker", "flower"]


def test_rotate_flower_needs_no_store_pod(stack: Stack) -> None:
    old_users = stack.value(FLOWER, "users")
    seen = stack.generate("flower")
    assert seen.rows[2:4] == [
        ("replace", f"Secret {NS}/{FLOWER}: new random password (keys password, users (bcrypt))"),
        ("restart", f"deployment/flower in {NS}"),
    ]
    password, users = stack.value(FLOWER), stack.value(FLOWER, "users")
    assert users != old_users
    assert bcrypt.checkpw(password.encode(), users.split(":", 1)[1].encode())
    assert stack.execs == []  # no pod exec asked for at all
    assert stack.restarts() == ["flower"]
    assert stack.secret_puts(FLOWER) == [200]  # one write: it lives only in its Secret


def test_rotate_api_auth_restarts_nothing(stack: Stack) -> None:
    old = stack.value(API_AUTH)
    seen = stack.generate("api-auth")
    assert seen.rows[3] == (
        "replace",
        f"Secret {NS}/{API_AUTH}: new random password (keys password, users (bcrypt))",
    )
    assert stack.value(API_AUTH) != old and stack.restarts() == []  # Traefik reads it live


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
    assert [action for action, _ in stack.runs[-1].ran] == ["replace", "exec"]
    assert stack.restarts() == []


def test_failing_command_changes_nothing_and_hides_values(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_values(stack.server)
    stack.stores["rabbitmq"].faults = {"set": [3]}  # output echoes stdin (the password)
    message = fails(stack, "rabbitmq", capsys)
    assert "exited 3" in message and "********" in message
    assert all_values(stack.server) == before
    assert stack.restarts() == []


def test_drop_after_the_store_changed_is_finished_at_once(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.stores["postgres"].faults = {"set": ["after"]}
    seen = stack.generate("postgres")
    assert seen.ran == seen.runnable  # promoted and restarted in the same run
    assert stack.consistent("postgres", PG)
    assert stack.restarts() == ["api", "worker", "flower"]
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
    assert stack.stores[alias].accepts(stack.value(name, PENDING_KEY))
    assert stack.restarts() == []
    listed = {row[0]: row for row in listing(stack.k.core, NS)}
    assert listed[name][1] == "password, pending-password"
    assert "unfinished rotation since" in listed[name][3]

    started = stack.server.get("Secret", name, NS)["metadata"]["annotations"][STARTED_AT]  # type: ignore[index]
    seen = stack.generate(alias)  # finishes the earlier attempt: no new stash
    title, pod = ("PostgreSQL", "postgres-0") if alias == "postgres" else ("RabbitMQ", "rabbitmq-0")
    assert [row for row in seen.rows if row[0] != "keep"] == [
        (
            "exec",
            f"{title} (user desbordante) in pod {pod}: set the password stashed at {started} "
            "(on stdin)",
        ),
        ("replace", f"Secret {NS}/{name}: {PROMOTED}"),
        ("restart", CONSUMERS),
    ]
    assert seen.ran == seen.runnable
    assert stack.consistent(alias, name) and stack.value(name) != old
    assert stack.restarts() == ["api", "worker", "flower"]
    assert "restarted api, worker, flower" in capsys.readouterr().out


@pytest.mark.parametrize("alias, name", [("postgres", PG), ("rabbitmq", MQ)])
def test_plain_generate_finishes_a_rotation_the_store_already_has(
    stack: Stack, capsys: pytest.CaptureFixture[str], alias: str, name: str
) -> None:
    stack.stores[alias].faults = {"set": ["after"], "check": ["before"]}
    fails(stack, alias, capsys)
    seen = stack.generate()  # e.g. bootstrap, or a rotation of another secret
    row = next(i for i, (_, target) in enumerate(seen.rows) if "ask which password" in target)
    assert seen.rows[row + 1] == (
        "replace",
        f"Secret {NS}/{name}: new one accepted -> {PROMOTED}; else pending-password removed",
    )
    assert seen.rows[row + 2] == (
        "restart",
        f"{CONSUMERS} (only when the new password is promoted)",
    )
    assert seen.ran == seen.runnable
    assert "unfinished rotation finished" in capsys.readouterr().out
    assert stack.consistent(alias, name)
    assert stack.stores[alias].calls[-1][0] == "check"  # checked, did not set again
    assert stack.restarts() == ["api", "worker", "flower"]


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
    assert PENDING_KEY in stack.keys(MQ)  # still there to finish with
    stack.generate()
    assert "unfinished rotation undone (the store kept the old password)" in (
        capsys.readouterr().out
    )
    assert stack.value(MQ) == before and stack.consistent("rabbitmq", MQ)
    assert stack.restarts() == []  # the restart step runs, but only a promotion restarts
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
    before = all_values(stack.server)
    stack.drops.fail("PUT", f"/secrets/{PG}", 1, dropped())
    message = fails(stack, "postgres", capsys)
    assert message.startswith(f"Saving the new password in Secret {PG} failed (ProtocolError")
    assert "nothing was changed" in message and "--rotate postgres` again" in message
    assert all_values(stack.server) == before and stack.secret_puts(PG) == []
    assert stack.stores["postgres"].calls == []


def test_failed_promotion_says_the_store_has_the_new_one_and_rerun_finishes(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    old = stack.value(PG)
    stack.drops.fail("PUT", f"/secrets/{PG}", 2, dropped())
    message = fails(stack, "postgres", capsys)
    assert message.startswith("PostgreSQL has the NEW password; updating Secret")
    assert "SSLEOFError" in message and "--rotate postgres` again to finish" in message
    assert stack.value(PG) == old and not stack.stores["postgres"].accepts(old)
    assert stack.restarts() == []
    stack.generate("postgres")
    assert stack.consistent("postgres", PG)
    assert stack.restarts() == ["api", "worker", "flower"]


def test_concurrent_change_of_the_secret_is_not_overwritten(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    class Racing(FakeStore):
        """Someone else writes the Secret while the store is being changed."""

        def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]:
            result = super().__call__(argv, stdin)
            stack.k.core.patch_namespaced_secret(PG, NS, {"metadata": {"labels": {"x": "y"}}})
            return result

    stack.stores["postgres"] = Racing("postgres", stack.value(PG))
    message = fails(stack, "postgres", capsys)
    assert "HTTP 409 Conflict" in message and "to finish" in message
    assert stack.secret_puts(PG) == [200, 409]
    assert stack.server.get("Secret", PG, NS)["metadata"]["labels"]["x"] == "y"  # type: ignore[index]


def test_failed_restart_names_the_command_that_finishes(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.drops.fail("PATCH", "/deployments/api", 1, dropped())
    message = fails(stack, "rabbitmq", capsys)
    assert message.startswith(f"The new rabbitmq password is in RabbitMQ and Secret {MQ}")
    assert "restarting its consumers failed (ProtocolError" in message
    assert (
        f"`kubectl -n {NS} rollout restart deployment/api deployment/worker deployment/flower`"
        in message
    )
    assert stack.consistent("rabbitmq", MQ)


def test_no_running_store_pod_changes_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_values(stack.server)
    stack.server.remove("Pod", "postgres-0", NS)
    built = generate_plan(stack.cfg, stack.k, "postgres")  # the real pod exec factory
    assert built.rows[1] == (
        "exec",
        "PostgreSQL (user desbordante) in the postgres pod (none runs now: the real run would "
        "stop here): set the new password (on stdin)",
    )
    with pytest.raises(Exit) as info:
        plan.execute(built)
    assert str(info.value.message) == (
        f"No running pod matches {names.selector(names.POSTGRES)} in {NS}; deploy the stack "
        "first; nothing was changed."
    )
    assert all_values(stack.server) == before and stack.secret_puts(PG) == []
    assert PENDING_KEY not in stack.keys(PG)


# --- plan equals run: the dry run is the plan the real run executes ---------------------------


def test_plan_is_run_creating_on_a_new_cluster(k3s: Cluster) -> None:
    dry, real = twice(k3s.server, lambda: generate_plan(config("stage"), k3s.admin))
    assert dry.dry_run and dry.ran == []
    assert dry.rows == real.rows and real.ran == real.runnable == real.rows
    assert [action for action, _ in real.rows] == ["create"] * 5
    assert sorted(s["metadata"]["name"] for s in k3s.server.all("Secret", NS)) == sorted(ALL)


def test_plan_is_run_keeping_what_exists(k3s: Cluster) -> None:
    cfg = prepare(k3s.admin, "stage")
    before = len(k3s.server.writes())
    dry, real = twice(k3s.server, lambda: generate_plan(cfg, k3s.admin))
    assert dry.rows == real.rows == [keep(name) for name in ALL]
    assert real.ran == real.runnable == []
    assert len(k3s.server.writes()) == before


@pytest.mark.parametrize(
    "alias, name, restarts",
    [
        ("postgres", PG, ["api", "worker", "flower"]),
        ("rabbitmq", MQ, ["api", "worker", "flower"]),
        ("flower", FLOWER, ["flower"]),
    ],
)
def test_plan_is_run_rotating(stack: Stack, alias: str, name: str, restarts: list[str]) -> None:
    old = stack.value(name)
    with plan.watching() as seen:
        plan.execute(stack.plan(alias), dry_run=True)
        assert stack.execs == [] and stack.value(name) == old  # nothing executed, nothing written
        assert stack.restarts() == [] and stack.secret_puts(name) == []
        plan.execute(stack.plan(alias))
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    assert real.ran == [row for row in real.rows if row[0] != "keep"]
    assert stack.value(name) != old and stack.restarts() == restarts
    if alias != "flower":
        assert stack.consistent(alias, name)


@pytest.mark.parametrize("rotate", [None, "postgres"])
def test_plan_is_run_recovering_an_unfinished_rotation(
    stack: Stack, capsys: pytest.CaptureFixture[str], rotate: str | None
) -> None:
    stack.stores["postgres"].faults = {"set": ["after"], "check": ["before"]}
    fails(stack, "postgres", capsys)
    calls = len(stack.stores["postgres"].calls)
    with plan.watching() as seen:
        plan.execute(stack.plan(rotate), dry_run=True)
        assert len(stack.stores["postgres"].calls) == calls  # the dry run asks no store
        assert PENDING_KEY in stack.keys(PG)
        plan.execute(stack.plan(rotate))
    dry, real = seen
    assert dry.rows == real.rows and real.ran == real.runnable
    first = real.ran[0][1]
    assert first.startswith("PostgreSQL (user desbordante) in pod postgres-0: ")
    wanted = "set the password stashed at" if rotate else "ask which password it accepts"
    assert wanted in first
    assert stack.consistent("postgres", PG)
    assert stack.restarts() == ["api", "worker", "flower"]


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


def exec_with(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> PodExec:
    """pod_exec into postgres-0 whose exec stream (kubernetes.stream) is OUTCOME or raises it."""

    def fake_stream(*args: Any, **kwargs: Any) -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(podexec, "stream", fake_stream)
    return pod_exec(kube_for(FakeApiServer()), NS, "postgres-0", container="postgres")


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
    with pytest.raises(ExecFailed) as info:
        run(["psql"], "secret-stdin")
    message = str(info.value)
    assert expected in message and "\n" not in message and "secret-stdin" not in message
    assert message.startswith(f"`psql` in pod {NS}/postgres-0")
    if isinstance(outcome, FakeResp):
        assert outcome.closed


def test_pod_exec_returns_code_and_output(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exec_with(monkeypatch, FakeResp())(["true"], "") == (0, "out")


# --- through the tasks and the real client over HTTPS ----------------------------------------


def test_tasks_never_print_or_log_values(
    fake_api: FakeApiServer,
    admin_kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """secrets.generate (creating, a rotation that fails half-way, its re-run) and secrets.list,
    with every log at DEBUG (the kubernetes client logs response bodies there)."""
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    caplog.set_level(logging.DEBUG)
    c = Context()
    secrets_tasks.generate(c, env="stage")
    seen = set(all_values(fake_api))
    store = FakeStore("postgres", secret_value(fake_api, PG) or "")
    store.faults = {"set": ["after"], "check": ["before"]}
    monkeypatch.setattr(generate, "store_exec_factory", lambda k, ns: lambda spec: store)
    with pytest.raises(Exit) as info:
        secrets_tasks.generate(c, env="stage", rotate="postgres")
    secrets_tasks.list(c, env="stage")
    seen |= set(all_values(fake_api))  # now with the pending one
    secrets_tasks.generate(c, env="stage", rotate="postgres")
    secrets_tasks.list(c, env="stage")
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text + str(info.value.message)
    namespace = fake_api.get("Namespace", NS)
    assert namespace is not None  # created, with the Pod Security labels
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "created" in text and "rotated" in text and "pending-password" in text
    # At DEBUG the kubernetes client would log every response body (Secrets base64-encoded):
    # the toolkit keeps its REST logger at INFO, so no body is logged at all.
    assert "response body" not in caplog.text and "DEBUG" in caplog.text
    seen |= {stdin.strip() for _, _, stdin in store.calls}
    assert len(seen) > 5
    for value in seen:
        assert value not in text


def test_devops_rotation_survives_a_drop_through_the_real_client(
    fake_api: FakeApiServer, admin: Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secret writes are PUTs with the resourceVersion read; RBAC lets devops do all of it."""
    path = grant(admin, tmp_path, "devops")
    cfg, devops = config_for(path), connect_with(path)
    ensure_secrets(cfg, devops)
    old = secret_value(fake_api, PG)
    assert old
    store = FakeStore("postgres", old)
    store.faults = {"set": ["after"], "check": ["before"]}
    seen = len(fake_api.requests)
    with pytest.raises(Exit, match="again to finish"):
        plan.execute(generate_plan(cfg, devops, "postgres", lambda spec: store))
    pending = secret_value(fake_api, PG, PENDING_KEY)
    assert secret_value(fake_api, PG) == old and pending and store.accepts(pending)
    puts = [r for r in fake_api.requests[seen:] if r.method == "PUT"]
    assert [r.path.split("?")[0] for r in puts] == [f"/api/v1/namespaces/{NS}/secrets/{PG}"]

    with plan.watching() as runs:
        plan.execute(generate_plan(cfg, devops, "postgres", lambda spec: store))
    assert runs[0].ran == runs[0].runnable
    assert secret_value(fake_api, PG) == pending
    assert secret_value(fake_api, PG, PENDING_KEY) is None
    written = fake_api.requests[seen:]
    assert all(r.code == 200 for r in written if r.method == "PUT")
    assert {r.user for r in written} == {f"system:serviceaccount:{NS}:access-jane"}
    # no Deployments here: the restart finds none (404), which is no error
    assert {r.code for r in written if r.method == "PATCH"} == {404}
    printed = capsys.readouterr().out
    assert old not in printed and pending not in printed
