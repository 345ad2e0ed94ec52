"""Generated secrets of the local stack: one file per secret under .secrets/<env>/.

Each secret is created with `secrets.token_urlsafe` on first use (directory 0700, file 0600,
created exclusively so a value is never overwritten) and reused afterwards. Processes get only
the file path, as `<NAME>_FILE`; values are never printed, logged or put on a command line.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from invoke import Exit

from desbordante_ops.core.settings import REPO_ROOT, SECRET_KEYS

TOKEN_BYTES = 32


def secrets_dir(env: str = "local", root: Path = REPO_ROOT) -> Path:
    """Directory of the generated secrets of ENV."""
    return root / ".secrets" / env


def _ensure_private_dir(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # .secrets/ itself, when new
    path.mkdir(mode=0o700, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def secret_path(name: str, env: str = "local", root: Path = REPO_ROOT) -> Path:
    """Path of the file holding secret NAME (it may not exist yet)."""
    return secrets_dir(env, root) / name


def ensure_secret(name: str, env: str = "local", root: Path = REPO_ROOT) -> Path:
    """Path of secret NAME, generating the file (0600) on first use; an existing one is reused."""
    if name not in SECRET_KEYS:
        raise Exit(f"Unknown secret {name}; expected one of {', '.join(SECRET_KEYS)}.")
    directory = secrets_dir(env, root)
    _ensure_private_dir(directory)
    path = directory / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)
        if not read_secret(path):
            raise Exit(f"{path} is empty; delete it so a new secret is generated.") from None
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(TOKEN_BYTES))
    return path


def ensure_secrets(
    names: tuple[str, ...] = SECRET_KEYS, env: str = "local", root: Path = REPO_ROOT
) -> dict[str, Path]:
    """Paths of every secret in NAMES, generated where missing."""
    return {name: ensure_secret(name, env, root) for name in names}


def read_secret(path: Path) -> str:
    """The value held in a secret file (for the toolkit's own use; never print it)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise Exit(
            f"Cannot read secret file {path}: {exc.strerror}; check its permissions."
        ) from None


def file_env(paths: dict[str, Path]) -> dict[str, str]:
    """`<NAME>_FILE` variables pointing at the secret files, for a process environment."""
    return {f"{name}_FILE": str(path) for name, path in paths.items()}
