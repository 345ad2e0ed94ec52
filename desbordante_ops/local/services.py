"""PostgreSQL and RabbitMQ on this machine: installed when missing, started when stopped.

`invoke up` runs `ensure_services` first. Each service the stack uses on this machine (a
remote POSTGRES_HOST or RABBITMQ_HOST is left alone) is, in turn:
- answering: left as it is (a running service and its data are never touched here);
- installed but stopped: started with systemd where systemd runs (`systemctl start ...`),
  else with its own command (`pg_ctlcluster --skip-systemctl-redirect VER NAME start`,
  `rabbitmq-server -detached`);
- missing: its Debian/Ubuntu package (`postgresql`, `rabbitmq-server`) is installed with
  apt-get, after saying so, then started like a stopped one.
Then every service started here is waited for (bounded, with progress). Installing and
starting need root or passwordless sudo; without them, without apt-get, or with
`--no-install` for a missing package, one line names the exact commands and `invoke up` stops.
Every command runs through the Invoke context.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from invoke import Context, Exit

from desbordante_ops.core.console import ok, step, tracker
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.local import pgadmin
from desbordante_ops.local.machine import (
    Privilege,
    apt_available,
    find_tool,
    for_person,
    last_line,
    privilege,
    systemd_running,
)
from desbordante_ops.local.pgadmin import LOOPBACK
from desbordante_ops.local.preflight import amqp_reachable

RUNNING, STARTING, STOPPED, MISSING = "running", "starting", "stopped", "missing"
WAIT_SECONDS = 120.0  # for a started service to answer (RabbitMQ takes the longest)
POLL_SECONDS = 1.0
LIST_TIMEOUT = 30
START_TIMEOUT = 180
APT_UPDATE_TIMEOUT = 600
APT_INSTALL_TIMEOUT = 1800


@dataclass(frozen=True)
class Service:
    """One service of the stack on this machine, as found."""

    name: str
    package: str
    address: str
    state: str
    logs: str
    answers: Callable[[EnvConfig], bool]
    systemd_start: tuple[str, ...] = ()
    own_start: tuple[str, ...] = ()
    hint: str = ""  # what to look at when it does not answer

    def start_command(self, systemd: bool) -> list[str]:
        """How to start it (as root): systemd's unit where systemd runs, else its own command."""
        return list(self.systemd_start if systemd else self.own_start)


def postgres_answers(cfg: EnvConfig) -> bool:
    return pgadmin.answers(cfg)


def rabbitmq_answers(cfg: EnvConfig) -> bool:
    return amqp_reachable(cfg.backend.RABBITMQ_HOST, cfg.backend.RABBITMQ_PORT, timeout=2).ok


def _probed(
    cfg: EnvConfig,
    name: str,
    package: str,
    host: str | None,
    port: int,
    logs: str,
    answers: Callable[[EnvConfig], bool],
) -> Service | None:
    """The service at HOST:PORT running or (until shown otherwise) missing; None when remote."""
    if host not in LOOPBACK:
        return None
    service = Service(name, package, f"{host}:{port}", MISSING, logs, answers)
    return replace(service, state=RUNNING) if answers(cfg) else service


def find_postgres(c: Context, cfg: EnvConfig) -> Service | None:
    """The local PostgreSQL cluster on POSTGRES_PORT (Debian's postgresql-common tools)."""
    port = cfg.backend.POSTGRES_PORT
    service = _probed(
        cfg,
        "PostgreSQL",
        "postgresql",
        cfg.backend.POSTGRES_HOST,
        port,
        "/var/log/postgresql",
        postgres_answers,
    )
    if service is None or service.state == RUNNING or find_tool("pg_lsclusters") is None:
        return service
    listed = attempt(c, "pg_lsclusters --no-header", timeout=LIST_TIMEOUT)
    clusters = [line.split() for line in (listed.stdout or "").splitlines() if line.strip()]
    if not clusters:
        return service
    for version, name, cluster_port, status, *rest in (f for f in clusters if len(f) >= 4):
        if cluster_port == str(port):
            return replace(
                service,
                name=f"PostgreSQL {version}/{name}",
                state=STARTING if status.startswith("online") else STOPPED,
                logs=rest[2] if len(rest) > 2 else service.logs,
                systemd_start=("systemctl", "start", f"postgresql@{version}-{name}"),
                own_start=("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"),
                hint=f"listen_addresses and port in /etc/postgresql/{version}/{name}",
            )
    raise Exit(
        f"PostgreSQL is installed but no cluster uses port {port} (see pg_lsclusters); create one "
        f"(`pg_createcluster --start -p {port} VERSION main`) or set POSTGRES_PORT."
    )


def find_rabbitmq(cfg: EnvConfig) -> Service | None:
    """The local RabbitMQ node."""
    backend = cfg.backend
    service = _probed(
        cfg,
        "RabbitMQ",
        "rabbitmq-server",
        backend.RABBITMQ_HOST,
        backend.RABBITMQ_PORT,
        "/var/log/rabbitmq",
        rabbitmq_answers,
    )
    if service is None or service.state == RUNNING or find_tool("rabbitmq-server") is None:
        return service
    return replace(
        service,
        state=STOPPED,
        systemd_start=("systemctl", "start", "rabbitmq-server"),
        own_start=("rabbitmq-server", "-detached"),
        hint="a node stopped with `rabbitmqctl stop_app` needs `rabbitmqctl start_app`",
    )


def find_services(c: Context, cfg: EnvConfig) -> list[Service]:
    """The stack's services on this machine, in start order."""
    found = (find_postgres(c, cfg), find_rabbitmq(cfg))
    return [service for service in found if service is not None]


def install_commands(packages: Sequence[str]) -> list[list[str]]:
    """apt-get commands (as root) that install PACKAGES without questions."""
    return [
        ["apt-get", "update"],
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", *packages],
    ]


def _names(services: Sequence[Service]) -> str:
    return " and ".join(f"{s.name} ({s.address})" for s in services)


def _one_line(commands: Sequence[Sequence[str]], rights: Privilege) -> str:
    """COMMANDS as one line a person can paste (prefixed with sudo unless root)."""
    shown = (shlex.join(argv) if rights.root else for_person(argv) for argv in commands)
    return " && ".join(shown)


def _run_as_root(
    c: Context, rights: Privilege, argv: Sequence[str], what: str, timeout: int, hide: bool
) -> None:
    result = attempt(c, shlex.join(rights.as_root(argv)), hide=hide, timeout=timeout)
    if not result.ok:
        output = (result.stderr or "") + (result.stdout or "")
        raise Exit(f"Could not {what} (`{shlex.join(argv)}`): {last_line(output)}")


def _check_installable(missing: Sequence[Service], rights: Privilege, allowed: bool) -> None:
    """Exit when MISSING may not be installed here (--no-install, no apt-get)."""
    packages = [service.package for service in missing]
    what = f"{_names(missing)} not installed"
    if not allowed:
        commands = _one_line(install_commands(packages), rights)
        raise Exit(
            f"{what} and --no-install given; install with `{commands}`, then `invoke up` again."
        )
    if not apt_available():
        raise Exit(
            f"{what} and apt-get is not available; install {', '.join(packages)} with this "
            "system's package manager, start them, then `invoke up` again."
        )


def _refuse(c: Context, missing: Sequence[Service], stopped: Sequence[Service]) -> Exit:
    """Without root or sudo: one line with every command a person should run as root."""
    nobody = Privilege(root=False, sudo=False)
    commands = install_commands([s.package for s in missing]) if missing else []
    if stopped:
        systemd = systemd_running(c)
        commands += [service.start_command(systemd) for service in stopped]
    parts = [f"{_names(missing)} not installed"] if missing else []
    parts += [f"{_names(stopped)} stopped"] if stopped else []
    return Exit(
        f"{'; '.join(parts)}; that needs root or passwordless sudo: run "
        f"`{_one_line(commands, nobody)}`, then `invoke up` again."
    )


def install(c: Context, missing: Sequence[Service], rights: Privilege) -> None:
    """Install the packages of MISSING with apt-get (root or sudo), saying so first."""
    packages = [service.package for service in missing]
    step(
        f"{_names(missing)} not installed: installing {' '.join(packages)} with apt-get "
        f"{rights.how} (apt-get update, then apt-get install -y; this takes a few minutes)"
    )
    for argv in install_commands(packages):
        timeout = APT_INSTALL_TIMEOUT if "install" in argv else APT_UPDATE_TIMEOUT
        _run_as_root(c, rights, argv, "install with apt-get", timeout, hide=False)
    ok(f"Installed {' '.join(packages)}")


def start(c: Context, stopped: Sequence[Service], rights: Privilege) -> None:
    """Start STOPPED: systemd where it runs, else their own commands (root or sudo)."""
    systemd = systemd_running(c)
    for service in stopped:
        argv = service.start_command(systemd)
        step(f"Starting {service.name} {rights.how}: {shlex.join(argv)}")
        _run_as_root(
            c, rights, argv, f"start {service.name} (see {service.logs})", START_TIMEOUT, True
        )


def wait_answering(
    cfg: EnvConfig,
    services: Sequence[Service],
    timeout: float = WAIT_SECONDS,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Wait (bounded, with progress) until SERVICES answer; Exit naming those that do not."""
    answered: dict[str, bool] = {}
    with tracker() as track:

        def check() -> dict[str, bool]:
            for service in services:
                if not answered.get(service.name):
                    up = answered[service.name] = service.answers(cfg)
                    state = "answers" if up else "starting"
                    track.update(service.name, f"{service.name} at {service.address}: {state}", up)
            return answered

        poll(check, lambda now: all(now.values()), timeout, POLL_SECONDS, sleep or time.sleep)
    late = [s for s in services if not answered.get(s.name)]
    if late:
        look = [f"{s.logs} ({s.hint})" if s.hint else s.logs for s in late]
        raise Exit(f"{_names(late)} did not answer within {timeout:.0f}s; see {', '.join(look)}.")
    ok(f"{_names(services)} answering")


def ensure_services(c: Context, cfg: EnvConfig, allow_install: bool = True) -> None:
    """Install (apt-get) and start what the stack needs on this machine; see the module doc."""
    services = find_services(c, cfg)
    running = [service for service in services if service.state == RUNNING]
    if running:
        ok(f"{_names(running)} answering")
    pending = [service for service in services if service.state != RUNNING]
    if not pending:
        return
    missing = [service for service in pending if service.state == MISSING]
    stopped = [service for service in pending if service.state == STOPPED]
    rights = privilege(c)
    if missing:
        _check_installable(missing, rights, allow_install)
    if not rights.granted and (missing or stopped):
        raise _refuse(c, missing, stopped)
    if missing:
        install(c, missing, rights)
        services = find_services(c, cfg)
        pending = [service for service in services if service.state != RUNNING]
        still = [service for service in pending if service.state == MISSING]
        if still:
            raise Exit(f"{_names(still)} still missing after apt-get install; see its output.")
        stopped = [service for service in pending if service.state == STOPPED]
    if stopped:
        start(c, stopped, rights)
    wait_answering(cfg, pending)
