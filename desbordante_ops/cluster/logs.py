"""`invoke logs --env stage|prod`: the logs of every pod of the chosen services, each line prefixed.

One `kubectl logs -l <selector> --prefix` through the Invoke context rather than the Python
client: kubectl already reads many pods at once, follows them (`--follow`, new lines as they
come), keeps up with container restarts and prefixes each line with `[pod/<pod>/<container>]`;
with the client that would be one thread per pod stream and our own interleaving. Init
containers are included (`--all-containers`): a pod stuck waiting for the schema says so there.

Ctrl-C while following: the terminal interrupts kubectl (same process group); we note the
interrupt, let Invoke wait for kubectl to end, and return normally (exit 0).
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from invoke import Context, Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import kubectl
from desbordante_ops.core.console import ok
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt

SERVICES = names.COMPONENTS
# kubectl's --since: a Go duration of hours, minutes and seconds, e.g. 10m, 1h30m, 45s.
SINCE = re.compile(r"^(?=\d)(\d+h)?(\d+m)?(\d+s)?$")
# Streams kubectl may open at once (kubectl's default, 5, is less than one per pod here).
MAX_LOG_REQUESTS = 50


def check_services(services: Sequence[str]) -> list[str]:
    """SERVICES of a cluster environment (all of them when empty)."""
    for name in services:
        if name not in SERVICES:
            raise Exit(f"Unknown service {name!r}; use one of: {', '.join(SERVICES)}.")
    return list(services or SERVICES)


def selector(services: Sequence[str]) -> str:
    """One label selector for the pods of SERVICES."""
    return f"{names.NAME_LABEL}={names.APP_NAME},{names.COMPONENT_LABEL} in ({','.join(services)})"


def logs_command(
    cfg: EnvConfig, services: Sequence[str], follow: bool, since: str | None, lines: int
) -> str:
    if since and not SINCE.match(since):
        raise Exit(f"--since {since}: use a duration such as 10m, 1h or 1h30m.")
    args = [
        "-n",
        cfg.namespace,
        "logs",
        "-l",
        selector(services),
        "--prefix",
        "--all-containers",
        f"--max-log-requests={MAX_LOG_REQUESTS}",
        f"--tail={int(lines)}",
    ]
    if since:
        args.append(f"--since={since}")
    if follow:
        args += ["--follow", "--ignore-errors"]
    return kubectl(cfg, *args)


@contextmanager
def noting_interrupts() -> Iterator[list[int]]:
    """Record SIGINT (Ctrl-C) while the block runs; Invoke still forwards it as usual."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen  # only the main thread may set handlers (and receives SIGINT)
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def show(
    c: Context,
    cfg: EnvConfig,
    services: Sequence[str],
    follow: bool = False,
    since: str | None = None,
    lines: int = 50,
) -> None:
    """Print (or follow) the logs of SERVICES' pods in CFG's environment, prefixed by pod."""
    command = logs_command(cfg, check_services(services), follow, since, lines)
    try:
        with noting_interrupts() as interrupted:
            result = attempt(c, command, hide=False)
    except KeyboardInterrupt:
        interrupted = [signal.SIGINT]
        result = None
    if interrupted and follow:
        ok("stopped following (Ctrl-C)")
        return
    if result is None or not result.ok:
        exited = result.exited if result is not None else "interrupted"
        raise Exit(f"kubectl logs failed ({exited}); see its message above.")
