"""The stack's Secrets: which there are, what each holds, who reads it, and their API bodies.

Values come from `secrets.token_urlsafe`; this module builds them, never shows them.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

import bcrypt
from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.secrets.stores import Store
from desbordante_ops.core.settings import EnvConfig

TOKEN_BYTES = 32
ROTATED_AT = "desbordante.io/rotated-at"


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
# The key every spec keeps its password under (the Flower Secret also has `users`).
PASSWORD_KEY = "password"  # noqa: S105 - a Secret key name


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
        return {
            names.FlowerSecret.PASSWORD: password,
            names.FlowerSecret.USERS: htpasswd_line(cfg.backend.FLOWER_USER, password),
        }
    if spec.name == names.ApiAuthSecret.NAME:
        user = cfg.toolkit.API_AUTH_USER
        return {
            names.ApiAuthSecret.PASSWORD: password,
            names.ApiAuthSecret.USERS: htpasswd_line(user, password, "API_AUTH_USER"),
        }
    return {PASSWORD_KEY: password}


def secret_keys(spec: SecretSpec) -> str:
    """The keys SPEC's Secret holds, for plans and listings (never their values)."""
    if spec.name in (names.FlowerSecret.NAME, names.ApiAuthSecret.NAME):
        return "password, users (bcrypt)"
    return PASSWORD_KEY


def store_of(spec: SecretSpec, cfg: EnvConfig) -> Store | None:
    """Where SPEC's password also lives (service and user), None when only in the Secret."""
    if spec.store == "postgres":
        return Store("postgres", str(cfg.backend.POSTGRES_USER))
    if spec.store == "rabbitmq":
        return Store("rabbitmq", cfg.backend.RABBITMQ_DEFAULT_USER)
    return None


def find_spec(name: str) -> SecretSpec:
    """The spec for --rotate NAME (alias such as `postgres`, or the Secret's name)."""
    for spec in SPECS:
        if name in (spec.alias, spec.name):
            return spec
    choices = ", ".join(s.alias for s in SPECS)
    raise Exit(f"--rotate {name!r}: no such secret; use one of: {choices}.")


def encode(value: str) -> str:
    """VALUE as a Secret's `data` holds it (base64)."""
    return base64.b64encode(value.encode()).decode()


def decode(secret: Any, key: str) -> str | None:
    """The value of KEY in SECRET's data, None when absent."""
    raw = (secret.data or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


def secret_body(spec: SecretSpec, values: dict[str, str], rotated_at: str) -> Any:
    """A new Secret for SPEC holding VALUES, labelled as ours."""
    return k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            name=spec.name,
            labels=dict(names.CREATED_LABELS),
            annotations={ROTATED_AT: rotated_at},
        ),
        type="Opaque",
        data={key: encode(value) for key, value in values.items()},
    )
