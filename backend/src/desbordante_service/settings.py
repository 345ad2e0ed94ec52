"""The service's configuration: environment variables only, one `Settings` class.

Every secret also accepts `<NAME>_FILE`, the path of a file holding the value (Kubernetes
mounts Secrets as files). Setting both the variable and its `_FILE` variant is an error.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FIELDS = ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASSWORD", "FLOWER_PASSWORD")
DATABASE_FIELDS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_DB")

Port = Annotated[int, Field(ge=1, le=65535)]
INT4_MAX = 2**31 - 1  # PostgreSQL integer (e.g. a task's time_limit column)
LONG_POLL_LIMIT_SECONDS = 600  # the largest LONG_POLL_MAX_SECONDS, and of a request's `wait`


class SettingsError(Exception):
    """A missing or invalid setting; the message is one line naming the variable."""


class Settings(BaseSettings):
    """All settings of the API, the workers, Flower and `migrate`."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    # Required by the roles that use the database (api, worker, migrate), not by Flower.
    POSTGRES_USER: str | None = Field(default=None, min_length=1)
    POSTGRES_PASSWORD: SecretStr | None = None
    POSTGRES_HOST: str | None = Field(default=None, min_length=1)
    POSTGRES_PORT: Port = 5432
    POSTGRES_DB: str | None = Field(default=None, min_length=1)
    POSTGRES_DIALECT_DRIVER: str = "postgresql+psycopg"

    RABBITMQ_DEFAULT_USER: str = Field(min_length=1)
    RABBITMQ_DEFAULT_PASSWORD: SecretStr
    RABBITMQ_HOST: str = Field(min_length=1)
    RABBITMQ_PORT: Port = 5672
    RABBITMQ_VHOST: str = "/"
    TASK_QUEUE: str = Field(default="profiling", pattern=r"^[A-Za-z0-9_.\-]{1,100}$")

    UPLOADED_FILES_DIR_PATH: Path
    APPLICATION_SERVER_HOST: str = "0.0.0.0"  # noqa: S104 - a server inside a container/pod
    APPLICATION_SERVER_PORT: Port = 8000
    API_WORKERS: int = Field(default=1, ge=1, le=64)

    FLOWER_USER: str = Field(default="admin", min_length=1)
    FLOWER_PASSWORD: SecretStr = SecretStr("")
    FLOWER_HOST: str = "0.0.0.0"  # noqa: S104
    FLOWER_PORT: Port = 5555
    FLOWER_URL_PREFIX: str = ""

    MAX_UPLOAD_SIZE_BYTES: int = Field(default=100 * 1024 * 1024, ge=1)
    UPLOAD_QUOTA_BYTES: int = Field(default=0, ge=0)  # all datasets together; 0: no quota
    TASK_TIME_LIMIT_SECONDS: int = Field(default=600, ge=1, le=INT4_MAX)
    TASK_SOFT_TIME_LIMIT_SECONDS: int | None = Field(default=None, ge=1, le=INT4_MAX)
    WORKER_CONCURRENCY: int = Field(default=1, ge=1, le=64)
    LONG_POLL_MAX_SECONDS: int = Field(default=60, ge=0, le=LONG_POLL_LIMIT_SECONDS)
    SHUTDOWN_GRACE_SECONDS: int = Field(default=20, ge=1, le=3600)

    # Bounded work: 0 turns a limit off.
    MAX_PENDING_TASKS: int = Field(default=100, ge=0, le=1_000_000)
    QUEUE_FULL_RETRY_AFTER_SECONDS: int = Field(default=30, ge=1, le=3600)
    RATE_LIMIT_PER_MINUTE: int = Field(default=0, ge=0, le=1_000_000)
    RETENTION_DAYS: int = Field(default=0, ge=0, le=36_500)
    LOG_LEVEL: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        soft = self.TASK_SOFT_TIME_LIMIT_SECONDS
        if soft is not None and soft >= self.TASK_TIME_LIMIT_SECONDS:
            raise ValueError(
                "TASK_SOFT_TIME_LIMIT_SECONDS must be lower than TASK_TIME_LIMIT_SECONDS"
            )
        return self

    @property
    def soft_time_limit(self) -> int:
        """Soft limit: the configured one, else a little below the hard limit."""
        if self.TASK_SOFT_TIME_LIMIT_SECONDS is not None:
            return self.TASK_SOFT_TIME_LIMIT_SECONDS
        return max(1, self.TASK_TIME_LIMIT_SECONDS - max(1, self.TASK_TIME_LIMIT_SECONDS // 10))

    def require_database(self) -> None:
        """Raise `SettingsError` naming the first missing database variable."""
        for name in DATABASE_FIELDS:
            if getattr(self, name) is None:
                raise SettingsError(f"{name}: required environment variable is not set")

    @property
    def database_url(self) -> str:
        self.require_database()
        assert self.POSTGRES_PASSWORD is not None and self.POSTGRES_USER is not None
        password = quote(self.POSTGRES_PASSWORD.get_secret_value(), safe="")
        user = quote(self.POSTGRES_USER, safe="")
        return (
            f"{self.POSTGRES_DIALECT_DRIVER}://{user}:{password}@"
            f"{self.POSTGRES_HOST}:{self.POSTGRES_PORT}/{self.POSTGRES_DB}"
        )

    @property
    def broker_url(self) -> str:
        password = quote(self.RABBITMQ_DEFAULT_PASSWORD.get_secret_value(), safe="")
        user = quote(self.RABBITMQ_DEFAULT_USER, safe="")
        vhost = quote(self.RABBITMQ_VHOST, safe="")
        return f"amqp://{user}:{password}@{self.RABBITMQ_HOST}:{self.RABBITMQ_PORT}/{vhost}"


def _secrets_from_files(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """Read `<NAME>_FILE` variants; one clear error per problem."""
    values: dict[str, Any] = {}
    for name in SECRET_FIELDS:
        path = environ.get(f"{name}_FILE")
        if not path:
            continue
        if environ.get(name):
            raise SettingsError(f"{name}: set either {name} or {name}_FILE, not both")
        try:
            values[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return values


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    if first["type"] == "missing":
        return f"{name}: required environment variable is not set"
    return f"{name}: {first['msg']}"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build `Settings` from the environment, raising `SettingsError` with one clear line."""
    env = dict(os.environ if environ is None else environ)
    overrides = _secrets_from_files(env)
    try:
        if environ is None:
            return Settings(**overrides)
        return Settings(**{**_plain(env), **overrides})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _plain(environ: dict[str, str]) -> dict[str, Any]:
    return {name: value for name, value in environ.items() if name in Settings.model_fields}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (validated once at start by the entry points)."""
    return load_settings()
