"""The stack's passwords as Kubernetes Secrets: created, listed, rotated; never shown.

Values come from `secrets.token_urlsafe` and go to the API server through the `kubernetes`
client only: never printed, logged, written to a file or put on a command line. An existing
Secret is kept. `--rotate NAME` also changes the password where it is stored (PostgreSQL
`ALTER ROLE`, `rabbitmqctl change_password`, both fed on stdin of a pod exec) and restarts the
consumers: PostgreSQL and RabbitMQ read their initial password only on first boot, so a Secret
regenerated on its own would break every connection.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bcrypt
from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster import kube, names
from desbordante_ops.core.console import ok
from desbordante_ops.core.settings import EnvConfig

TOKEN_BYTES = 32
ROTATED_AT = "desbordante.io/rotated-at"
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class SecretSpec:
    """One Secret of the stack and who depends on its value."""

    alias: str
    name: str
    store: str | None  # "postgres" / "rabbitmq": where the password also lives; None: nowhere
    restart: tuple[str, ...]  # Deployments that read the value at start


SPECS: tuple[SecretSpec, ...] = (
    SecretSpec(
        "postgres", names.PostgresSecret.NAME, "postgres", (names.API, names.WORKER, names.FLOWER)
    ),
    SecretSpec(
        "rabbitmq", names.RabbitMQSecret.NAME, "rabbitmq", (names.API, names.WORKER, names.FLOWER)
    ),
    SecretSpec("flower", names.FlowerSecret.NAME, None, (names.FLOWER,)),
    SecretSpec("api-auth", names.ApiAuthSecret.NAME, None, ()),  # Traefik reads it live
)

# Secret spec -> a function running argv (with stdin) in the pod of the spec's store.
ExecFactory = Callable[[SecretSpec], kube.PodExec]


def new_password() -> str:
    """A fresh random password (URL-safe, 43 characters, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def htpasswd_line(user: str, password: str, key: str = "FLOWER_USER") -> str:
    """One `user:$2b$...` bcrypt line, as Traefik's basicAuth `users` secret key expects."""
    if not user or ":" in user:
        raise Exit(f"{key}={user!r}: must be non-empty and contain no ':'.")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{user}:{hashed}"


def secret_values(spec: SecretSpec, cfg: EnvConfig, password: str) -> dict[str, str]:
    """The keys of SPEC's Secret for PASSWORD."""
    if spec.name == names.FlowerSecret.NAME:
        user = cfg.backend.FLOWER_USER
        return {
            names.FlowerSecret.PASSWORD: password,
            names.FlowerSecret.USERS: htpasswd_line(user, password),
        }
    if spec.name == names.ApiAuthSecret.NAME:
        user = cfg.toolkit.API_AUTH_USER
        return {
            names.ApiAuthSecret.PASSWORD: password,
            names.ApiAuthSecret.USERS: htpasswd_line(user, password, "API_AUTH_USER"),
        }
    key = (
        names.PostgresSecret.PASSWORD if spec.store == "postgres" else names.RabbitMQSecret.PASSWORD
    )
    return {key: password}


def find_spec(name: str) -> SecretSpec:
    """The spec for --rotate NAME (alias such as `postgres`, or the Secret's name)."""
    for spec in SPECS:
        if name in (spec.alias, spec.name):
            return spec
    choices = ", ".join(s.alias for s in SPECS)
    raise Exit(f"--rotate {name!r}: no such secret; use one of: {choices}.")


def scram_sha256_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of PASSWORD (what `ALTER ROLE ... PASSWORD` stores).

    Sending the verifier instead of the password means the plain value never reaches psql,
    the server log or pg_stat_activity. Our passwords are ASCII, so SASLprep is the identity.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def postgres_rotation(role: str, password: str) -> tuple[list[str], str]:
    """(argv, stdin) that set ROLE's password in PostgreSQL; argv carries no secret."""
    quoted_role = '"' + role.replace('"', '""') + '"'
    verifier = scram_sha256_verifier(password)
    sql = f"ALTER ROLE {quoted_role} WITH PASSWORD '{verifier}';\n\\q\n"
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", role, "-d", "postgres"], sql


def rabbitmq_rotation(user: str, password: str) -> tuple[list[str], str]:
    """(argv, stdin) that set USER's password in RabbitMQ; rabbitmqctl reads it from stdin."""
    return ["rabbitmqctl", "change_password", user], password + "\n"


def _scrub(text: str, *values: str) -> str:
    for value in values:
        if value:
            text = text.replace(value, "********")
    return text


def apply_in_store(spec: SecretSpec, cfg: EnvConfig, password: str, run: kube.PodExec) -> None:
    """Set the new password where the service keeps it; Exit (nothing changed) on failure."""
    if spec.store == "postgres":
        argv, stdin = postgres_rotation(str(cfg.backend.POSTGRES_USER), password)
    elif spec.store == "rabbitmq":
        argv, stdin = rabbitmq_rotation(cfg.backend.RABBITMQ_DEFAULT_USER, password)
    else:
        return
    code, output = run(argv, stdin)
    if code != 0:
        detail = _scrub(output.strip(), password, stdin.strip())[-500:]
        raise Exit(
            f"Changing the {spec.alias} password in the running service failed (exit {code}); "
            f"the Secret was left unchanged. Output: {detail}"
        )


def _secret_body(spec: SecretSpec, values: dict[str, str], rotated_at: str) -> Any:
    return k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            name=spec.name,
            labels={**names.MANAGED_BY, names.PART_OF_LABEL: names.APP_NAME},
            annotations={ROTATED_AT: rotated_at},
        ),
        type="Opaque",
        string_data=values,
    )


def read_secret(core: Any, name: str, namespace: str) -> Any | None:
    """The Secret NAME, or None when it does not exist."""
    return kube.read_or_none(core.read_namespaced_secret, name, namespace)


def generate(
    core: Any,
    apps: Any,
    cfg: EnvConfig,
    namespace: str,
    rotate: str | None = None,
    exec_for: ExecFactory | None = None,
) -> list[tuple[str, str]]:
    """Create missing Secrets, keep existing ones, rotate ROTATE; returns (name, action) rows."""
    target = find_spec(rotate) if rotate else None
    rows: list[tuple[str, str]] = []
    for spec in SPECS:
        existing = read_secret(core, spec.name, namespace)
        if existing is None:
            password = new_password()
            core.create_namespaced_secret(
                namespace, _secret_body(spec, secret_values(spec, cfg, password), kube.now_iso())
            )
            rows.append((spec.name, "created"))
        elif spec is target:
            if exec_for is None:
                raise Exit("Rotation needs a cluster connection; run it through the task.")
            password = new_password()
            apply_in_store(spec, cfg, password, exec_for(spec))
            body = _secret_body(spec, secret_values(spec, cfg, password), kube.now_iso())
            core.patch_namespaced_secret(spec.name, namespace, body)
            restarted = kube.restart_workloads(apps, namespace, deployments=spec.restart)
            action = "rotated" + (f", restarted {', '.join(restarted)}" if restarted else "")
            rows.append((spec.name, action))
        else:
            rows.append((spec.name, "kept"))
    return rows


def _age(created: dt.datetime | None, now: dt.datetime) -> str:
    if created is None:
        return "?"
    seconds = int((now - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def listing(core: Any, namespace: str, now: dt.datetime | None = None) -> list[tuple[str, ...]]:
    """(name, keys, age, rotated-at) of every Secret of the stack; values are never read out."""
    now = now or dt.datetime.now(dt.UTC)
    rows: list[tuple[str, ...]] = []
    for spec in SPECS:
        secret = read_secret(core, spec.name, namespace)
        if secret is None:
            rows.append((spec.name, "-", "missing", "-"))
            continue
        keys = ", ".join(sorted((secret.data or {}).keys()))
        annotations = secret.metadata.annotations or {}
        created = secret.metadata.creation_timestamp
        rows.append((spec.name, keys, _age(created, now), annotations.get(ROTATED_AT, "-")))
    return rows


def store_exec_factory(k: kube.Kube, namespace: str) -> ExecFactory:
    """Pod exec into the postgres / rabbitmq pod of NAMESPACE for a rotation."""

    def make(spec: SecretSpec) -> kube.PodExec:
        component = names.POSTGRES if spec.store == "postgres" else names.RABBITMQ
        pod = kube.first_running_pod(k.core, namespace, names.selector(component))
        return kube.pod_exec(k, namespace, pod, container=component)

    return make


def ensure_secrets(
    cfg: EnvConfig, k: kube.Kube, rotate: str | None = None
) -> list[tuple[str, str]]:
    """Namespace + Secrets of CFG's environment on cluster K (used by the task and bootstrap)."""
    if rotate:
        find_spec(rotate)
    namespace = cfg.namespace
    if kube.ensure_namespace(k.core, namespace, dict(names.NAMESPACE_LABELS)):
        ok(f"namespace {namespace} created")
    return generate(k.core, k.apps, cfg, namespace, rotate, store_exec_factory(k, namespace))
