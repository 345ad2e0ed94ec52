"""Root tasks `backup` and `restore`: one archive of an environment's data, and back."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit, task

from desbordante_ops.backup import flow
from desbordante_ops.backup.scratch import verify_plan
from desbordante_ops.backup.targets import read_target
from desbordante_ops.core.plan import execute
from desbordante_ops.core.settings import ENV_NAMES, load_config, parse_sets
from desbordante_ops.tasks import options

ENV_HELP = f"Environment: {', '.join(ENV_NAMES)}"


@task(
    help={
        "env": ENV_HELP,
        "output": "Directory for the archive (default: backups/ in the repository)",
        "verify": "Then restore the archive's dump into a scratch database and compare its row "
        "counts; --verify ARCHIVE checks an existing archive instead of taking a backup",
        "set_": options.SET,
        "dry_run": options.DRY_RUN,
    },
    iterable=["set_"],
    optional=["verify"],
)
def backup(
    c: Context,
    env: str = "local",
    output: str | None = None,
    verify: bool | str | None = None,
    set_: list[str] | None = None,
    dry_run: bool = False,
) -> None:
    """Write one archive of an environment's database and uploaded files (never secrets)."""
    cfg = load_config(env, parse_sets(set_))
    target = read_target(c, cfg)
    if isinstance(verify, str):
        if output:
            raise Exit("--output makes no sense with --verify ARCHIVE (no archive is written).")
        execute(verify_plan(target, Path(verify)), dry_run)
        return
    directory = Path(output) if output else cfg.root / "backups"
    execute(flow.backup_plan(target, directory, verify_it=bool(verify)), dry_run)


@task(
    help={
        "env": ENV_HELP,
        "archive": "Archive written by `invoke backup`",
        "yes": "Do not ask for the typed environment name (required without a terminal)",
        "set_": options.SET,
        "dry_run": "Verify the archive and print the steps; change nothing (asks nothing)",
    },
    iterable=["set_"],
)
def restore(
    c: Context,
    env: str = "local",
    archive: str = "",
    yes: bool = False,
    set_: list[str] | None = None,
    dry_run: bool = False,
) -> None:
    """Replace an environment's database and uploaded files with an archive (asks first)."""
    if not archive:
        raise Exit("Pass --archive PATH (an archive written by `invoke backup`).")
    cfg = load_config(env, parse_sets(set_))
    execute(flow.restore_plan(read_target(c, cfg), Path(archive), yes=yes), dry_run)
