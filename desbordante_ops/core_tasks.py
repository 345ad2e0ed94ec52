"""Root tasks: `config`, `doctor`, `up`, `down`, `status`, `logs` (thin wrappers)."""

from __future__ import annotations

from collections.abc import Iterable

from invoke import Context, Exit, task

from . import doctor as doctor_checks
from . import stack
from .config import ENV_NAMES, EnvConfig, load_config
from .console import print_table

SET_HELP = "Override a setting, KEY=VALUE (repeatable); beats environment and env file"
DOCKER_HELP = "Use containers of the built image (host networking) instead of local processes"


def parse_sets(pairs: Iterable[str] | None) -> dict[str, str | None]:
    """`--set KEY=VALUE` flags as a mapping for load_config."""
    flags: dict[str, str | None] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise Exit(f"--set expects KEY=VALUE, got {pair!r}.")
        flags[key.strip()] = value
    return flags


def local_config(pairs: Iterable[str] | None = None) -> EnvConfig:
    """Settings of the local environment with `--set` overrides."""
    return load_config("local", parse_sets(pairs))


def show_config(cfg: EnvConfig) -> None:
    """Print every effective setting with its source; secrets masked."""
    print_table(
        f"settings of {cfg.name} (flag > environment > env/{cfg.name}.env > default)",
        ("key", "value", "source"),
        [(value.key, value.shown, value.source) for value in cfg.items()],
    )


@task(
    help={"env": f"Environment: {', '.join(ENV_NAMES)}", "set_": SET_HELP},
    iterable=["set_"],
)
def config(c: Context, env: str = "local", set_: list[str] | None = None) -> None:
    """Print the effective settings of an environment and where each value came from."""
    show_config(load_config(env, parse_sets(set_)))


@task(
    help={"set_": SET_HELP, "local_only": "Only the checks the local stack needs"},
    iterable=["set_"],
)
def doctor(c: Context, set_: list[str] | None = None, local_only: bool = False) -> None:
    """Check this host for the local stack, image and cluster work; table with fixes."""
    cfg = local_config(set_)
    checks = doctor_checks.local_checks(cfg, ours=stack.Supervisor(stack.paths_for(cfg)).pids)
    if not local_only:
        checks += doctor_checks.tooling_checks()
    report = doctor_checks.run_checks(checks)
    doctor_checks.print_report(report)
    doctor_checks.ensure(report)


@task(
    help={
        "docker": DOCKER_HELP,
        "image": "Image for --docker (default: IMAGE_NAME from the config)",
        "timeout": "Seconds to wait for every service to be ready",
        "set_": SET_HELP,
    },
    iterable=["set_"],
)
def up(
    c: Context,
    docker: bool = False,
    image: str | None = None,
    timeout: float = 120.0,
    set_: list[str] | None = None,
) -> None:
    """Start the local stack (api, worker, flower) and wait until it is ready."""
    stack.up(c, local_config(set_), docker=docker, image=image, timeout=float(timeout))


@task(
    help={
        "docker": DOCKER_HELP,
        "timeout": "Seconds to wait for supervisord to exit after the services stopped",
        "set_": SET_HELP,
    },
    iterable=["set_"],
)
def down(
    c: Context, docker: bool = False, timeout: float = 30.0, set_: list[str] | None = None
) -> None:
    """Stop the local stack gracefully (bounded); data stays."""
    stack.down(c, local_config(set_), docker=docker, timeout=float(timeout))


@task(help={"docker": DOCKER_HELP, "set_": SET_HELP}, iterable=["set_"])
def status(c: Context, docker: bool = False, set_: list[str] | None = None) -> None:
    """Show each service's state, pid, port and health."""
    stack.status(c, local_config(set_), docker=docker)


@task(
    help={
        "service": f"One of {', '.join(stack.SERVICES)} (default: all)",
        "follow": "Keep printing new lines (Ctrl-C to stop)",
        "lines": "How many past lines to show",
        "docker": DOCKER_HELP,
        "set_": SET_HELP,
    },
    iterable=["set_"],
    positional=["service"],
)
def logs(
    c: Context,
    service: str | None = None,
    follow: bool = False,
    lines: int = 50,
    docker: bool = False,
    set_: list[str] | None = None,
) -> None:
    """Show the logs of the local stack's services."""
    stack.logs(c, local_config(set_), service, follow=follow, lines=int(lines), docker=docker)


ROOT_TASKS = (config, doctor, up, down, status, logs)
