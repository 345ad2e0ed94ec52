"""The local stack's one interface: up, down, status, logs; processes or containers behind it.

`LocalStack.up` is the same sequence for both kinds: make sure this machine's PostgreSQL and
RabbitMQ run (`services`: installed with apt-get and started when missing or stopped), check
the host, provision secrets, database and broker, migrate, start what is not running, wait
until every service is ready (a failing one shows its last log lines), then print what runs
and where.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from invoke import Context, Exit

from desbordante_ops.core.console import console, fail, ok, print_table, step, tracker
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.local.credentials import secret_path
from desbordante_ops.local.environ import prepare
from desbordante_ops.local.health import Health, ServiceStatus, flower_url
from desbordante_ops.local.services import ensure_services
from desbordante_ops.local.supervise import SERVICES

LOG_TAIL_LINES = 25
POLL_SECONDS = 0.5


class LocalStack(ABC):
    """api, worker and flower of the local environment, against local PostgreSQL/RabbitMQ."""

    kind: str = ""
    title: str = "local stack"

    def __init__(self, c: Context, cfg: EnvConfig) -> None:
        self.c = c
        self.cfg = cfg

    # --- what each kind provides ------------------------------------------------------------

    @abstractmethod
    def is_running(self) -> bool:
        """True when any part of this stack runs."""

    @abstractmethod
    def check_host(self) -> None:
        """Exit with a clear reason when this host cannot run the stack now."""

    @abstractmethod
    def migrate(self, env: dict[str, str]) -> None:
        """Bring the database schema to the code's head revision (Exit on failure)."""

    @abstractmethod
    def start(self, env: dict[str, str]) -> None:
        """Start every service that is not running."""

    @abstractmethod
    def health(self, service: str) -> Health:
        """Readiness of one service."""

    @abstractmethod
    def log_tail(self, service: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last LINES log lines of SERVICE."""

    @abstractmethod
    def rows(self) -> list[ServiceStatus]:
        """Status rows of every service."""

    @abstractmethod
    def down(self, timeout: float) -> None:
        """Stop every service gracefully (bounded); data stays."""

    @abstractmethod
    def logs(self, services: Sequence[str], follow: bool, lines: int) -> None:
        """Print (or follow) the logs of SERVICES."""

    # --- the same for both ----------------------------------------------------------------

    def up(self, timeout: float, install: bool = True) -> None:
        """Bring the stack up; starts only what is not running yet.

        PostgreSQL and RabbitMQ on this machine are started when stopped, and installed first
        when missing unless INSTALL is false (then a missing one stops `up` with the commands).
        """
        step("Checking PostgreSQL and RabbitMQ on this machine")
        ensure_services(self.c, self.cfg, install)
        step("Checking the host")
        self.check_host()
        env = prepare(self.c, self.cfg)
        self.migrate(env)
        self.start(env)
        self.wait_ready(timeout)
        self.status()
        self.print_urls()

    def wait_ready(self, timeout: float) -> None:
        """Wait until every service is ready; on failure show its log lines and Exit."""
        states: dict[str, Health] = {}
        with tracker() as track:

            def check() -> dict[str, Health]:
                for name in SERVICES:
                    if name not in states or not (states[name].ready or states[name].failed):
                        states[name] = self.health(name)
                        done = states[name].ready
                        track.update(name, f"{name}: {states[name].detail}", float(done))
                return states

            poll(
                check,
                lambda now: all(h.ready or h.failed for h in now.values()),
                timeout,
                POLL_SECONDS,
            )
        failed = {
            name: health.detail if health.failed else f"not ready within {timeout:.0f}s"
            for name, health in states.items()
            if not health.ready
        }
        if failed:
            for name, why in failed.items():
                fail(f"{name}: {why}")
                self.show_log_tail(name)
            raise Exit(
                f"{', '.join(failed)} did not become ready; see the log lines above, fix, "
                "then `invoke up` again."
            )

    def show_log_tail(self, service: str) -> None:
        console.print(f"[bold]Last lines of {service}:[/]")
        for line in self.log_tail(service) or ["(empty)"]:
            console.print(f"  {line}", markup=False, highlight=False)

    def status(self) -> list[ServiceStatus]:
        """Print and return each service's state, pid, port and health."""
        rows = self.rows()
        columns = ["service", "state", "pid", "port", "health"]
        with_image = any(row.image for row in rows)
        print_table(
            self.title,
            [*columns, "image"] if with_image else columns,
            [
                (r.name, r.state, str(r.pid or "-"), r.port, r.health)
                + ((r.image,) if with_image else ())
                for r in rows
            ],
        )
        return rows

    def print_urls(self) -> None:
        """Where things are (never a secret value)."""
        api = self.cfg.toolkit.API_BASE_URL
        password_file = secret_path("FLOWER_PASSWORD", root=self.cfg.root)
        print_table(
            "URLs",
            ("what", "where"),
            [
                ("API", f"{api}/api/v1"),
                ("Swagger UI", f"{api}/docs"),
                ("Flower", flower_url(self.cfg)),
                (
                    "Flower login",
                    f"user {self.cfg.backend.FLOWER_USER}, password in {password_file}",
                ),
            ],
        )
        ok(f"{self.title} is ready")


def check_services(services: Sequence[str] | None) -> list[str]:
    """SERVICES checked against the stack's services (all of them when empty)."""
    for name in services or ():
        if name not in SERVICES:
            raise Exit(f"Unknown service {name!r}; use one of: {', '.join(SERVICES)}.")
    return list(services or SERVICES)
