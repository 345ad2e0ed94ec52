"""Effective settings of one environment (local, stage, prod) and where each value came from.

Precedence, highest first: command-line flag > process environment > env/<name>.env > defaults.
The env files hold non-secret settings only; they are read with `dotenv_values` and never
copied into `os.environ`. Secrets (passwords) are recognised so they can be masked, but they
normally live in files (see `localsecrets`) and reach processes as `<NAME>_FILE` paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from invoke import Exit

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_NAMES = ("local", "stage", "prod")

SOURCE_FLAG = "flag"
SOURCE_ENVIRONMENT = "environment"
SOURCE_DEFAULT = "default"

# Secrets: never in an env file, masked in every output.
SECRET_KEYS = ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASSWORD", "FLOWER_PASSWORD")

# Variables the backend reads (names fixed by the backend contract), with its defaults.
BACKEND_DEFAULTS: dict[str, str] = {
    "POSTGRES_USER": "desbordante",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_DB": "desbordante",
    "POSTGRES_DIALECT_DRIVER": "postgresql+psycopg",
    "RABBITMQ_DEFAULT_USER": "desbordante",
    "RABBITMQ_HOST": "127.0.0.1",
    "RABBITMQ_PORT": "5672",
    "RABBITMQ_VHOST": "/",
    "UPLOADED_FILES_DIR_PATH": "",
    "APPLICATION_SERVER_HOST": "0.0.0.0",  # noqa: S104 - the server's bind address
    "APPLICATION_SERVER_PORT": "8000",
    "API_WORKERS": "1",
    "FLOWER_USER": "admin",
    "FLOWER_HOST": "0.0.0.0",  # noqa: S104 - Flower's bind address
    "FLOWER_PORT": "5555",
    "FLOWER_URL_PREFIX": "",
    "MAX_UPLOAD_SIZE_BYTES": "104857600",
    "TASK_TIME_LIMIT_SECONDS": "600",
    "TASK_SOFT_TIME_LIMIT_SECONDS": "",
    "WORKER_CONCURRENCY": "1",
    "LONG_POLL_MAX_SECONDS": "60",
    "LOG_LEVEL": "INFO",
}

# Settings of the toolkit itself (images, cluster, e2e targets, local administration).
TOOLKIT_DEFAULTS: dict[str, str] = {
    "IMAGE_NAME": "ghcr.io/desbordante/desbordante-backend",
    "IMAGE_REGISTRY": "",
    "K8S_NAMESPACE": "",  # derived: desbordante-<env>
    "API_HOST": "",  # ingress host name of the API (stage/prod)
    # Ingress host name of Flower. Not FLOWER_HOST: that is Flower's bind address in the backend.
    "FLOWER_INGRESS_HOST": "",
    "API_BASE_URL": "",  # derived, see _derive
    "FLOWER_BASE_URL": "",  # derived, see _derive
    "API_REPLICAS": "1",
    "WORKER_REPLICAS": "1",
    "KUBECONFIG_PATH": "",
    "POSTGRES_ADMIN_USER": "postgres",
    "POSTGRES_ADMIN_DB": "postgres",
    "MIN_FREE_DISK_MB": "1024",
    "LOCAL_RUN_DIR": ".run/local",  # local stack: supervisord conf, socket, pid and log files
}

DEFAULTS: dict[str, str] = {
    **BACKEND_DEFAULTS,
    **TOOLKIT_DEFAULTS,
    **{key: "" for key in SECRET_KEYS},
}

MASK = "********"


@dataclass(frozen=True)
class Value:
    """One effective setting."""

    key: str
    value: str
    source: str
    secret: bool

    @property
    def shown(self) -> str:
        """The value as it may be printed: secrets masked."""
        if self.secret:
            return MASK if self.value else "(not set)"
        return self.value


class EnvConfig:
    """The effective settings of one environment; read-only."""

    def __init__(self, name: str, values: Mapping[str, Value], root: Path) -> None:
        self.name = name
        self.root = root
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        try:
            return self._values[key].value
        except KeyError:
            raise Exit(f"Setting {key} is unknown; add it to env/{self.name}.env.") from None

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of KEY, or DEFAULT when it is unknown or empty."""
        value = self._values.get(key)
        return value.value if value is not None and value.value != "" else default

    def get_int(self, key: str) -> int:
        """The value of KEY as an integer; a clear Exit when it is not one."""
        raw = self[key]
        try:
            return int(raw)
        except ValueError:
            raise Exit(
                f"{key}={raw!r} (from {self.source(key)}) is not an integer; fix it."
            ) from None

    def source(self, key: str) -> str:
        """Where KEY came from: flag, environment, env/<name>.env or default."""
        if key not in self._values:
            raise Exit(f"Setting {key} is unknown; add it to env/{self.name}.env.")
        return self._values[key].source

    def items(self) -> Iterator[Value]:
        """Every setting, sorted by key."""
        return iter(sorted(self._values.values(), key=lambda v: v.key))

    def backend_env(self) -> dict[str, str]:
        """The non-empty, non-secret backend variables, for a process environment."""
        return {
            key: self._values[key].value
            for key in BACKEND_DEFAULTS
            if key in self._values and self._values[key].value != ""
        }

    @property
    def env_file(self) -> Path:
        return env_file(self.name, self.root)

    def __repr__(self) -> str:
        return f"EnvConfig(name={self.name!r}, keys={len(self._values)})"


def env_file(name: str, root: Path = REPO_ROOT) -> Path:
    """Path of env/<name>.env."""
    return root / "env" / f"{name}.env"


def read_env_file(path: Path) -> dict[str, str]:
    """Plain KEY=VALUE pairs of an env file (comments allowed); never touches os.environ."""
    if not path.is_file():
        raise Exit(f"{path} not found; create it (see env/README.md).")
    values = dotenv_values(path, interpolate=False)
    empty = [key for key, value in values.items() if value is None]
    if empty:
        raise Exit(f"{path}: line '{empty[0]}' has no '=VALUE'; write it as {empty[0]}=VALUE.")
    secret = [key for key in values if key in SECRET_KEYS]
    if secret:
        raise Exit(f"{path}: {secret[0]} is a secret and must not be in an env file; remove it.")
    return {key: value or "" for key, value in values.items()}


def _derive(name: str, values: dict[str, Value], root: Path) -> None:
    """Fill derived defaults (namespace, base URLs, local uploads) from the resolved values.

    Local paths given relative (e.g. `.run/local/uploads`) are made absolute under ROOT.
    """

    def fill(key: str, value: str) -> None:
        if values[key].value == "" and values[key].source == SOURCE_DEFAULT:
            values[key] = Value(key, value, SOURCE_DEFAULT, False)

    fill("K8S_NAMESPACE", f"desbordante-{name}")
    if name == "local":
        for key in ("UPLOADED_FILES_DIR_PATH", "LOCAL_RUN_DIR"):
            given = values[key]
            if given.value and not Path(given.value).is_absolute():
                values[key] = Value(key, str(root / given.value), given.source, False)
        fill("UPLOADED_FILES_DIR_PATH", str(root / ".run" / "local" / "uploads"))
        fill("API_BASE_URL", f"http://127.0.0.1:{values['APPLICATION_SERVER_PORT'].value}")
        fill("FLOWER_BASE_URL", f"http://127.0.0.1:{values['FLOWER_PORT'].value}")
    else:
        if values["API_HOST"].value:
            fill("API_BASE_URL", f"http://{values['API_HOST'].value}")
        if values["FLOWER_INGRESS_HOST"].value:
            fill("FLOWER_BASE_URL", f"http://{values['FLOWER_INGRESS_HOST'].value}")


def load_config(
    env: str,
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path = REPO_ROOT,
) -> EnvConfig:
    """Resolve the settings of ENV: flag > process environment > env/<env>.env > defaults.

    FLAGS maps keys to command-line values (None = flag not given). ENVIRON defaults to
    os.environ; only known keys (defaults and keys of the env file) are taken from it.
    """
    if env not in ENV_NAMES:
        raise Exit(f"Unknown environment {env!r}; use one of: {', '.join(ENV_NAMES)}.")
    environ = os.environ if environ is None else environ
    file_values = read_env_file(env_file(env, root))
    file_source = f"env/{env}.env"

    values: dict[str, Value] = {}
    for key in {**DEFAULTS, **file_values}:
        secret = key in SECRET_KEYS
        if flags is not None and flags.get(key) is not None:
            value, source = str(flags[key]), SOURCE_FLAG
        elif key in environ:
            value, source = environ[key], SOURCE_ENVIRONMENT
        elif key in file_values:
            value, source = file_values[key], file_source
        else:
            value, source = DEFAULTS[key], SOURCE_DEFAULT
        values[key] = Value(key, value, source, secret)
    for key, value in (flags or {}).items():
        if value is not None and key not in values:
            values[key] = Value(key, str(value), SOURCE_FLAG, key in SECRET_KEYS)
    _derive(env, values, root)
    return EnvConfig(env, values, root)
