"""Local secrets: generated once (0600 in a 0700 directory), reused, never printed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from invoke import Exit

from desbordante_ops.local.credentials import (
    ensure_secret,
    ensure_secrets,
    file_env,
    read_secret,
    secrets_dir,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_with_private_modes(tmp_path: Path) -> None:
    path = ensure_secret("FLOWER_PASSWORD", root=tmp_path)
    assert path == tmp_path / ".secrets" / "local" / "FLOWER_PASSWORD"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700  # .secrets/
    value = read_secret(path)
    assert len(value) >= 40  # token_urlsafe(32)


def test_reused_not_regenerated(tmp_path: Path) -> None:
    first = read_secret(ensure_secret("POSTGRES_PASSWORD", root=tmp_path))
    again = read_secret(ensure_secret("POSTGRES_PASSWORD", root=tmp_path))
    assert first == again


def test_each_secret_distinct(tmp_path: Path) -> None:
    paths = ensure_secrets(root=tmp_path)
    values = {read_secret(path) for path in paths.values()}
    assert len(values) == len(paths) == 3


def test_loose_modes_are_tightened(tmp_path: Path) -> None:
    path = ensure_secret("FLOWER_PASSWORD", root=tmp_path)
    path.chmod(0o644)
    path.parent.chmod(0o755)
    ensure_secret("FLOWER_PASSWORD", root=tmp_path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_empty_file_and_unknown_name(tmp_path: Path) -> None:
    directory = secrets_dir(root=tmp_path)
    directory.mkdir(parents=True)
    (directory / "FLOWER_PASSWORD").write_text("")
    with pytest.raises(Exit, match="is empty"):
        ensure_secret("FLOWER_PASSWORD", root=tmp_path)
    with pytest.raises(Exit, match="Unknown secret"):
        ensure_secret("AWS_KEY", root=tmp_path)


def test_file_env_carries_paths_only(tmp_path: Path) -> None:
    paths = ensure_secrets(root=tmp_path)
    env = file_env(paths)
    assert set(env) == {
        "POSTGRES_PASSWORD_FILE",
        "RABBITMQ_DEFAULT_PASSWORD_FILE",
        "FLOWER_PASSWORD_FILE",
    }
    for name, path in paths.items():
        assert env[f"{name}_FILE"] == str(path)
        assert read_secret(path) not in env.values()


def test_values_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = ensure_secrets(root=tmp_path)
    out = capsys.readouterr()
    for path in paths.values():
        assert read_secret(path) not in out.out + out.err
