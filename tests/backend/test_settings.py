"""Configuration: environment variables only, *_FILE secrets, one clear line on errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from desbordante_service.settings import SettingsError, load_settings

BASE = {
    "POSTGRES_USER": "u",
    "POSTGRES_PASSWORD": "p@ss:/word",
    "POSTGRES_HOST": "db",
    "POSTGRES_DB": "d",
    "RABBITMQ_DEFAULT_USER": "r",
    "RABBITMQ_DEFAULT_PASSWORD": "rp",
    "RABBITMQ_HOST": "mq",
    "UPLOADED_FILES_DIR_PATH": "/data",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests build settings from explicit dicts; keep the process environment out."""
    from desbordante_service.settings import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_urls_are_built_and_quoted() -> None:
    settings = load_settings(BASE)

    assert settings.database_url == "postgresql+psycopg://u:p%40ss%3A%2Fword@db:5432/d"
    assert settings.broker_url == "amqp://r:rp@mq:5672/%2F"
    assert "p@ss" not in repr(settings)


def test_limits_default_to_a_bounded_queue_no_rate_limit_and_no_retention() -> None:
    settings = load_settings(BASE)

    assert settings.MAX_PENDING_TASKS == 100
    assert settings.QUEUE_FULL_RETRY_AFTER_SECONDS == 30
    assert settings.RATE_LIMIT_PER_MINUTE == 0
    assert settings.RETENTION_DAYS == 0


def test_secret_from_file(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {k: v for k, v in BASE.items() if k != "POSTGRES_PASSWORD"}

    settings = load_settings({**env, "POSTGRES_PASSWORD_FILE": str(secret)})

    assert settings.POSTGRES_PASSWORD is not None
    assert settings.POSTGRES_PASSWORD.get_secret_value() == "from-file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"RABBITMQ_HOST": None}, "RABBITMQ_HOST: required environment variable is not set"),
        ({"POSTGRES_PORT": "abc"}, "POSTGRES_PORT: Input should be a valid integer"),
        ({"RABBITMQ_PORT": "70000"}, "RABBITMQ_PORT: Input should be less than or equal to 65535"),
        ({"MAX_UPLOAD_SIZE_BYTES": "0"}, "MAX_UPLOAD_SIZE_BYTES: Input should be greater than"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: String should match pattern"),
        (
            {"POSTGRES_PASSWORD": None, "POSTGRES_PASSWORD_FILE": "/nonexistent/pw"},
            "POSTGRES_PASSWORD_FILE: cannot read /nonexistent/pw",
        ),
        (
            {"TASK_TIME_LIMIT_SECONDS": "10", "TASK_SOFT_TIME_LIMIT_SECONDS": "10"},
            "TASK_SOFT_TIME_LIMIT_SECONDS must be lower than TASK_TIME_LIMIT_SECONDS",
        ),
        ({"MAX_PENDING_TASKS": "-1"}, "MAX_PENDING_TASKS: Input should be greater than or equal"),
        ({"MAX_PENDING_TASKS": "lots"}, "MAX_PENDING_TASKS: Input should be a valid integer"),
        ({"QUEUE_FULL_RETRY_AFTER_SECONDS": "0"}, "QUEUE_FULL_RETRY_AFTER_SECONDS: Input should"),
        ({"RATE_LIMIT_PER_MINUTE": "-5"}, "RATE_LIMIT_PER_MINUTE: Input should be greater than"),
        ({"RETENTION_DAYS": "-1"}, "RETENTION_DAYS: Input should be greater than or equal to 0"),
        ({"RETENTION_DAYS": "1.5"}, "RETENTION_DAYS: Input should be a valid integer"),
    ],
)
def test_invalid_settings_name_the_variable(change: dict, message: str) -> None:
    env = {**BASE, **change}
    env = {k: v for k, v in env.items() if v is not None}

    with pytest.raises(SettingsError) as error:
        load_settings(env)

    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_database_settings_are_only_required_where_the_database_is_used() -> None:
    without_db = {k: v for k, v in BASE.items() if not k.startswith("POSTGRES_")}

    settings = load_settings(without_db)

    with pytest.raises(SettingsError, match="POSTGRES_USER: required environment variable"):
        settings.require_database()


@pytest.mark.parametrize("role", ["api", "worker", "migrate", "retention"])
def test_database_roles_stop_without_database_settings(role: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in BASE and not k.endswith("_FILE")}
    env.update({k: v for k, v in BASE.items() if k != "POSTGRES_HOST"})

    result = _run_role(role, env)

    assert result.returncode == 2
    assert result.stderr == (
        "configuration error: POSTGRES_HOST: required environment variable is not set\n"
    )


def test_variable_and_file_variant_together_is_an_error(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")

    with pytest.raises(
        SettingsError, match="set either POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE"
    ):
        load_settings({**BASE, "POSTGRES_PASSWORD_FILE": str(secret)})


def _run_role(role: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "desbordante_service", role],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("role", ["api", "worker", "flower", "migrate"])
def test_entry_points_stop_with_one_line_and_exit_2(role: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in BASE and not k.endswith("_FILE")}
    env.update({k: v for k, v in BASE.items() if k != "RABBITMQ_HOST"})

    result = _run_role(role, env)

    assert result.returncode == 2
    assert result.stderr == (
        "configuration error: RABBITMQ_HOST: required environment variable is not set\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_flower_requires_a_password() -> None:
    env = {**os.environ, **BASE}
    env.pop("FLOWER_PASSWORD", None)

    result = _run_role("flower", env)

    assert result.returncode == 2
    assert "FLOWER_PASSWORD: required for flower" in result.stderr
