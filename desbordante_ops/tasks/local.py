"""Root tasks of the local stack: `up`, `down`, `status`, `logs`."""

from __future__ import annotations

from invoke import Context, task

from desbordante_ops.core.settings import load_config, parse_sets
from desbordante_ops.local.stack import check_services
from desbordante_ops.local.stacks import open_stack
from desbordante_ops.local.supervise import SERVICES
from desbordante_ops.tasks import options


@task(
    help={
        "docker": options.DOCKER,
        "image": "Image for --docker (default: IMAGE_NAME at the tag of HEAD)",
        "timeout": "Seconds to wait for every service to be ready",
        "no_install": "Do not install a missing PostgreSQL/RabbitMQ with apt-get; "
        "stop and print the commands instead",
        "set_": options.SET,
    },
    iterable=["set_"],
)
def up(
    c: Context,
    docker: bool = False,
    image: str | None = None,
    timeout: float = 120.0,
    no_install: bool = False,
    set_: list[str] | None = None,
) -> None:
    """Start the local stack (api, worker, flower) and wait until it is ready."""
    cfg = load_config("local", parse_sets(set_))
    open_stack(c, cfg, docker, image).up(float(timeout), install=not no_install)


@task(
    help={
        "docker": options.DOCKER,
        "timeout": "Seconds to wait for supervisord to exit after the services stopped",
        "set_": options.SET,
    },
    iterable=["set_"],
)
def down(
    c: Context, docker: bool = False, timeout: float = 30.0, set_: list[str] | None = None
) -> None:
    """Stop the local stack gracefully (bounded); data stays."""
    open_stack(c, load_config("local", parse_sets(set_)), docker).down(float(timeout))


@task(help={"docker": options.DOCKER, "set_": options.SET}, iterable=["set_"])
def status(c: Context, docker: bool = False, set_: list[str] | None = None) -> None:
    """Show each service's state, pid, port and health."""
    open_stack(c, load_config("local", parse_sets(set_)), docker).status()


@task(
    help={
        "service": f"One of {', '.join(SERVICES)} (repeatable; default: all)",
        "follow": "Keep printing new lines (Ctrl-C to stop)",
        "lines": "How many past lines to show",
        "docker": options.DOCKER,
        "set_": options.SET,
    },
    iterable=["service", "set_"],
)
def logs(
    c: Context,
    service: list[str] | None = None,
    follow: bool = False,
    lines: int = 50,
    docker: bool = False,
    set_: list[str] | None = None,
) -> None:
    """Show the logs of the local stack's services (all of them by default)."""
    services = check_services(service)
    stack = open_stack(c, load_config("local", parse_sets(set_)), docker)
    stack.logs(services, follow=follow, lines=int(lines))
