"""Root tasks of the local stack: `up`, `down`, `status`, `logs`."""

from __future__ import annotations

from invoke import Context, Exit, task

# Imported by their full names: this module's tasks are called `status` and `logs` too.
import desbordante_ops.cluster.logs
import desbordante_ops.cluster.status
from desbordante_ops.cluster.kube.client import connect
from desbordante_ops.core.settings import cluster_config, load_config, parse_sets
from desbordante_ops.local.stack import check_services
from desbordante_ops.local.stacks import open_stack
from desbordante_ops.local.supervise import SERVICES
from desbordante_ops.tasks import options

CLUSTER_ONLY = ", ".join(s for s in desbordante_ops.cluster.logs.SERVICES if s not in SERVICES)


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


@task(
    help={"env": options.ANY_ENV, "docker": options.DOCKER, "set_": options.SET},
    iterable=["set_"],
)
def status(
    c: Context, env: str = "local", docker: bool = False, set_: list[str] | None = None
) -> None:
    """Show what runs and whether it is healthy (local stack, or --env stage|prod)."""
    if env != "local":
        cfg = cluster_config(env, parse_sets(set_))
        desbordante_ops.cluster.status.show(c, cfg, connect(cfg))
        return
    open_stack(c, load_config("local", parse_sets(set_)), docker).status()


@task(
    help={
        "service": f"One of {', '.join(SERVICES)} (stage/prod also "
        f"{CLUSTER_ONLY}; repeatable; "
        "default: all)",
        "follow": "Keep printing new lines (Ctrl-C to stop)",
        "lines": "How many past lines to show (per container on stage/prod)",
        "since": "Only lines newer than this, e.g. 10m or 1h (stage/prod)",
        "env": options.ANY_ENV,
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
    since: str | None = None,
    env: str = "local",
    docker: bool = False,
    set_: list[str] | None = None,
) -> None:
    """Show the logs of every service (or --service S), each line with its source."""
    if env != "local":
        cfg = cluster_config(env, parse_sets(set_))
        desbordante_ops.cluster.logs.show(c, cfg, service or [], follow, since, int(lines))
        return
    if since:
        raise Exit("--since works with --env stage|prod; for the local stack use --lines N.")
    services = check_services(service)
    stack = open_stack(c, load_config("local", parse_sets(set_)), docker)
    stack.logs(services, follow=follow, lines=int(lines))
