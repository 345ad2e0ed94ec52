"""Root tasks `backup` and `restore`: one archive of an environment's data, and back."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit, task

from desbordante_ops.backup import flow
from desbordante_ops.backup.targets import open_target
from desbordante_ops.core.settings import ENV_NAMES, load_config, parse_sets
from desbordante_ops.tasks import options

ENV_HELP = f"Environment: {', '.join(ENV_NAMES)}"


@task(
    help={
        "env": ENV_HELP,
        "output": "Directory for the archive (default: backups/ in the repository)",
        "set_": options.SET,
    },
    iterable=["set_"],
)
def backup(
    c: Context, env: str = "local", output: str | None = None, set_: list[str] | None = None
) -> None:
    """Write one archive of an environment's database and uploaded files (never secrets)."""
    cfg = load_config(env, parse_sets(set_))
    flow.backup(open_target(c, cfg), Path(output) if output else cfg.root / "backups")


@task(
    help={
        "env": ENV_HELP,
        "archive": "Archive written by `invoke backup`",
        "yes": "Do not ask for the typed environment name (required without a terminal)",
        "set_": options.SET,
    },
    iterable=["set_"],
)
def restore(
    c: Context,
    env: str = "local",
    archive: str = "",
    yes: bool = False,
    set_: list[str] | None = None,
) -> None:
    """Replace an environment's database and uploaded files with an archive (asks first)."""
    if not archive:
        raise Exit("Pass --archive PATH (an archive written by `invoke backup`).")
    cfg = load_config(env, parse_sets(set_))
    flow.restore(open_target(c, cfg), Path(archive), yes=yes)
