"""Effective settings of one environment (local, stage, prod) and where each value came from.

Precedence, highest first: `--set KEY=VALUE` flag > process environment > env/<name>.env >
defaults. The env files hold non-secret settings only; they are read with `dotenv_values` and
never copied into `os.environ`.

Keys come from two typed models and nowhere else:
- the backend's own `desbordante_service.settings.Settings` (names, defaults, secret names):
  these are the only keys that reach the service's processes and pods;
- `Toolkit` below: settings of this toolkit (image, cluster, local administration) that never
  reach a pod.
`EnvConfig.backend` and `EnvConfig.toolkit` are the validated, typed views; `invoke config`
shows every raw value with its source.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from invoke import Exit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

try:
    from desbordante_service.settings import DATABASE_FIELDS, SECRET_FIELDS, Settings
except ImportError as error:  # pragma: no cover - the README installs both packages together
    raise SystemExit(
        f"The backend package is not installed ({error}); run: pip install -e ./backend -e ."
    ) from None

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = ("local", "stage", "prod")
CLUSTER_ENVS = ("stage", "prod")

SOURCE_FLAG = "flag"
SOURCE_ENVIRONMENT = "environment"
SOURCE_DEFAULT = "default"
MASK = "********"

# Secrets: never in an env file, masked in every output (names from the backend).
SECRET_KEYS: tuple[str, ...] = tuple(SECRET_FIELDS)


class Toolkit(BaseModel):
    """Settings of the toolkit itself; none of them reaches the service's processes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    IMAGE_NAME: str = Field("ghcr.io/desbordante/desbordante-backend", min_length=1)
    IMAGE_REGISTRY: str = ""  # registry host[:port] that images.push targets
    IMAGE_BUILD_NETWORK: str = ""  # docker build network mode (empty: the engine's default)
    K8S_NAMESPACE: str = ""  # derived: desbordante-<env>
    API_HOST: str = ""  # ingress host name of the API (stage/prod)
    # Ingress host name of Flower. Not FLOWER_HOST: that is Flower's bind address in the backend.
    FLOWER_INGRESS_HOST: str = ""
    API_BASE_URL: str = ""  # derived from API_HOST (or the local port)
    FLOWER_BASE_URL: str = ""  # derived from FLOWER_INGRESS_HOST (or the local port)
    API_REPLICAS: int = Field(1, ge=0, le=20)
    WORKER_REPLICAS: int = Field(1, ge=0, le=20)
    KUBECONFIG_PATH: str = ""  # derived: $KUBECONFIG (first entry), else ~/.kube/config
    POSTGRES_ADMIN_USER: str = "postgres"
    POSTGRES_ADMIN_DB: str = "postgres"
    MIN_FREE_DISK_MB: int = Field(1024, ge=0)
    LOCAL_RUN_DIR: str = ".run/local"  # local stack: supervisord conf, socket, pid and log files
    # The edge of stage/prod (k3s's Traefik; cluster/manifests/edge.py): HTTPS, who may call
    # the API and how often. Unused locally. TLS_MODE=auto: acme when every host is a public
    # DNS name, else selfsigned; what is in effect is edge.tls_choice, never this value alone.
    TLS_MODE: Literal["auto", "acme", "selfsigned", "off"] = "auto"
    ACME_EMAIL: str = ""  # Let's Encrypt account e-mail; required when the mode in effect is acme
    HSTS_SECONDS: int = Field(31536000, ge=0)  # Strict-Transport-Security max-age; 0 = none
    API_ACCESS: Literal["public", "restricted"] = "restricted"
    API_ALLOWED_IPS: str = ""  # comma-separated IPs/CIDRs; with restricted: an allow-list
    API_AUTH_USER: str = Field("desbordante", pattern=r"^[^:\s]+$")  # restricted: basic auth
    # Per client IP, on uploads and task creation only (Traefik rateLimit and inFlightReq).
    EDGE_RATE_AVERAGE: int = Field(30, ge=0)  # requests per EDGE_RATE_PERIOD; 0 = no limit
    EDGE_RATE_PERIOD: str = Field("1m", pattern=r"^[1-9][0-9]*(s|m|h)$")
    EDGE_RATE_BURST: int = Field(10, ge=1)
    EDGE_INFLIGHT: int = Field(4, ge=1)  # requests at the same time
    # Auto-update (stage): state and registry credentials, root-only files.
    AUTOUPDATE_STATE_DIR: str = Field("/var/lib/desbordante-ops", min_length=1)

    @field_validator("API_ALLOWED_IPS")
    @classmethod
    def _networks(cls, value: str) -> str:
        """Every comma-separated entry must be an IP address or a CIDR range."""
        networks(value)
        return value

    @property
    def allowed_networks(self) -> list[str]:
        """API_ALLOWED_IPS as normalized CIDR ranges (e.g. `203.0.113.7` -> `203.0.113.7/32`)."""
        return networks(self.API_ALLOWED_IPS)


def networks(value: str) -> list[str]:
    """Comma-separated IPs/CIDR ranges as normalized ranges; ValueError naming a bad entry."""
    found = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        try:
            found.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
    return found


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "get_secret_value"):
        return str(value.get_secret_value())
    return str(value)


def backend_defaults() -> dict[str, str]:
    """Every key the backend reads, with its default as text ("" when required or unset)."""
    return {
        name: "" if field.is_required() else _default_text(field.get_default())
        for name, field in Settings.model_fields.items()
        if name not in SECRET_KEYS
    }


def toolkit_defaults() -> dict[str, str]:
    return {name: _default_text(field.default) for name, field in Toolkit.model_fields.items()}


BACKEND_KEYS: tuple[str, ...] = tuple(backend_defaults())
TOOLKIT_KEYS: tuple[str, ...] = tuple(Toolkit.model_fields)
DEFAULTS: dict[str, str] = {
    **backend_defaults(),
    **toolkit_defaults(),
    **dict.fromkeys(SECRET_KEYS, ""),
}


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


def _describe(error: ValidationError, sources: Mapping[str, Value], env_file: str) -> str:
    first = error.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else "settings"
    if first["type"] == "missing" or key not in sources:
        return f"{key} is not set; set it in {env_file} (env/README.md explains it)."
    value = sources[key]
    return f"{key}={value.shown!r} (from {value.source}): {first['msg']}; fix it."


class EnvConfig:
    """The effective settings of one environment; read-only.

    `backend` (the service's `Settings`, secrets left empty) and `toolkit` are typed views of
    the same values; `source(key)` says where a value came from.
    """

    def __init__(self, name: str, values: Mapping[str, Value], root: Path) -> None:
        self.name = name
        self.root = root
        self._values = dict(values)
        backend: dict[str, Any] = {
            key: self._values[key].value for key in BACKEND_KEYS if self._values[key].value != ""
        }
        backend.setdefault("UPLOADED_FILES_DIR_PATH", ".")  # required where it is used
        backend["RABBITMQ_DEFAULT_PASSWORD"] = ""  # secrets never pass through settings
        toolkit = {key: self._values[key].value for key in TOOLKIT_KEYS}
        try:
            self.backend: Settings = Settings.model_validate(backend)
            self.toolkit = Toolkit.model_validate(toolkit)
        except ValidationError as error:
            raise Exit(_describe(error, self._values, f"env/{name}.env")) from None
        for key in DATABASE_FIELDS:  # every environment of ours has a database
            if key not in SECRET_KEYS and getattr(self.backend, key) is None:
                raise Exit(
                    f"{key} is not set; set it in env/{name}.env (env/README.md explains it)."
                )

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def value(self, key: str) -> str:
        """The raw text of KEY (for display and process environments)."""
        try:
            return self._values[key].value
        except KeyError:
            raise Exit(f"Setting {key} is unknown; see env/README.md for the keys.") from None

    def source(self, key: str) -> str:
        """Where KEY came from: flag, environment, env/<name>.env or default."""
        if key not in self._values:
            raise Exit(f"Setting {key} is unknown; see env/README.md for the keys.")
        return self._values[key].source

    def items(self) -> Iterator[Value]:
        """Every setting, sorted by key."""
        return iter(sorted(self._values.values(), key=lambda v: v.key))

    def backend_env(self) -> dict[str, str]:
        """The non-empty, non-secret backend variables, for a process environment or ConfigMap."""
        return {key: self._values[key].value for key in BACKEND_KEYS if self._values[key].value}

    @property
    def is_cluster(self) -> bool:
        return self.name in CLUSTER_ENVS

    @property
    def namespace(self) -> str:
        return self.toolkit.K8S_NAMESPACE

    @property
    def run_dir(self) -> Path:
        return Path(self.toolkit.LOCAL_RUN_DIR)

    @property
    def uploads_dir(self) -> Path:
        return Path(self.backend.UPLOADED_FILES_DIR_PATH)

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


def parse_sets(pairs: Iterable[str] | None) -> dict[str, str]:
    """`--set KEY=VALUE` flags as a mapping for load_config."""
    flags: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise Exit(f"--set expects KEY=VALUE, got {pair!r}.")
        if key.strip() not in DEFAULTS:
            raise Exit(f"--set {key.strip()}: unknown key; env/README.md lists every key.")
        flags[key.strip()] = value
    return flags


def _derive(name: str, values: dict[str, Value], root: Path, environ: Mapping[str, str]) -> None:
    """Fill derived defaults (namespace, base URLs, local paths) from the resolved values.

    Local paths given relative (e.g. `.run/local/uploads`) are made absolute under ROOT; the
    kubeconfig defaults to $KUBECONFIG (its first entry), else ~/.kube/config, as for kubectl.
    """

    def fill(key: str, value: str, source: str = SOURCE_DEFAULT) -> None:
        if values[key].value == "" and values[key].source == SOURCE_DEFAULT:
            values[key] = Value(key, value, source, False)

    fill("K8S_NAMESPACE", f"desbordante-{name}")
    kubeconfig = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if kubeconfig:
        fill("KUBECONFIG_PATH", kubeconfig, f"{SOURCE_ENVIRONMENT} (KUBECONFIG)")
    fill("KUBECONFIG_PATH", str(Path("~/.kube/config").expanduser()))
    if name == "local":
        for key in ("UPLOADED_FILES_DIR_PATH", "LOCAL_RUN_DIR"):
            given = values[key]
            if given.value and not Path(given.value).is_absolute():
                values[key] = Value(key, str(root / given.value), given.source, False)
        fill("UPLOADED_FILES_DIR_PATH", str(root / ".run" / "local" / "uploads"))
        fill("API_BASE_URL", f"http://127.0.0.1:{values['APPLICATION_SERVER_PORT'].value}")
        fill("FLOWER_BASE_URL", f"http://127.0.0.1:{values['FLOWER_PORT'].value}")
    else:
        # The scheme of the TLS mode in effect (cluster/manifests/edge.py tls_choice, which core
        # may not import): plain HTTP only when it is off, which only TLS_MODE=off gives; auto
        # picks acme or selfsigned by the hosts, both HTTPS (tests/unit/test_tls_choice.py
        # checks that the URLs and tls_choice agree).
        scheme = "http" if values["TLS_MODE"].value == "off" else "https"
        if values["API_HOST"].value:
            fill("API_BASE_URL", f"{scheme}://{values['API_HOST'].value}")
        if values["FLOWER_INGRESS_HOST"].value:
            fill("FLOWER_BASE_URL", f"{scheme}://{values['FLOWER_INGRESS_HOST'].value}")


def load_config(
    env: str,
    flags: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path = REPO_ROOT,
) -> EnvConfig:
    """Resolve the settings of ENV: flag > process environment > env/<env>.env > defaults.

    FLAGS maps keys to command-line values. ENVIRON defaults to os.environ; only known keys
    are taken from it.
    """
    if env not in ENV_NAMES:
        raise Exit(f"Unknown environment {env!r}; use one of: {', '.join(ENV_NAMES)}.")
    environ = os.environ if environ is None else environ
    flags = flags or {}
    file_values = read_env_file(env_file(env, root))
    file_source = f"env/{env}.env"
    unknown = [key for key in file_values if key not in DEFAULTS]
    if unknown:
        raise Exit(f"{file_source}: unknown key {unknown[0]}; env/README.md lists every key.")
    values: dict[str, Value] = {}
    for key, default in DEFAULTS.items():
        if key in flags:
            value, source = flags[key], SOURCE_FLAG
        elif key in environ:
            value, source = environ[key], SOURCE_ENVIRONMENT
        elif key in file_values:
            value, source = file_values[key], file_source
        else:
            value, source = default, SOURCE_DEFAULT
        values[key] = Value(key, value, source, key in SECRET_KEYS)
    _derive(env, values, root, environ)
    return EnvConfig(env, values, root)


def cluster_config(env: str, flags: Mapping[str, str] | None = None) -> EnvConfig:
    """Settings of a cluster environment (stage or prod); one clear Exit for anything else."""
    if env not in CLUSTER_ENVS:
        raise Exit(f"--env {env}: this works on a cluster; use one of {', '.join(CLUSTER_ENVS)}.")
    return load_config(env, flags)
