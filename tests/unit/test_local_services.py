"""`invoke up` on a machine without (running) PostgreSQL/RabbitMQ: the exact commands it runs
for root, sudo, neither, `--no-install`, systemd or not, no apt-get (MockContext: nothing is
installed or started here; tests/integration/test_up_starts_postgres.py starts one for real)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import calls, commands

from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local import machine as host
from desbordante_ops.local import services
from desbordante_ops.local.services import Service, ensure_services, wait_answering

CLUSTER = "15 main 5432 down postgres /var/lib/postgresql/15/main /var/log/postgresql/pg-15.log"
INSTALL = "apt-get install -y postgresql rabbitmq-server"
APT = f"apt-get update && env DEBIAN_FRONTEND=noninteractive {INSTALL}"
SERVICE_TOOLS = {"pg_lsclusters", "rabbitmq-server"}
PG_STARTS = ("pg_ctlcluster", "postgresql@")
RABBIT_STARTS = ("rabbitmq-server -detached", "systemctl start rabbitmq-server")


class FakeMachine:
    """Tools on PATH, uid, sudo, systemd and which services answer; apt-get "installs" and the
    start commands "start" (the probes answer once the command was run)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        *,
        root: bool = True,
        sudo: bool = False,
        systemd: bool = False,
        installed: Iterable[str] = SERVICE_TOOLS,
        answering: Iterable[str] = (),
        apt: bool = True,
        clusters: str = CLUSTER,
        fail: dict[str, Result] | None = None,
    ) -> None:
        self.tools = {"sudo", "systemctl", *installed, *(["apt-get"] if apt else [])}
        self.answering = set(answering)
        self.c = MockContext(
            run={
                **(fail or {}),
                "sudo -n true": Result(exited=0 if sudo else 1),
                "systemctl is-system-running": Result(
                    "running\n" if systemd else "offline\n", exited=0 if systemd else 1
                ),
                "pg_lsclusters --no-header": Result(clusters),
                re.compile(".*"): Result(exited=0),
            }
        )
        monkeypatch.setattr(host.os, "geteuid", lambda: 0 if root else 1000)
        for module in (host, services):
            monkeypatch.setattr(module, "find_tool", self.find_tool)
        monkeypatch.setattr(services, "postgres_answers", lambda cfg: self.answers("pg"))
        monkeypatch.setattr(services, "rabbitmq_answers", lambda cfg: self.answers("rabbit"))

    @property
    def commands(self) -> list[str]:
        return commands(self.c)

    def ran(self, *needles: str) -> bool:
        return any(needle in command for command in self.commands for needle in needles)

    def find_tool(self, name: str) -> str | None:
        installed = name in self.tools or (name in SERVICE_TOOLS and self.ran(INSTALL))
        return f"/usr/bin/{name}" if installed else None

    def answers(self, name: str) -> bool:
        started = self.ran(*(PG_STARTS if name == "pg" else RABBIT_STARTS))
        return name in self.answering or started


@pytest.fixture
def cfg() -> EnvConfig:
    return load_config("local", environ={})


def test_running_services_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = FakeMachine(monkeypatch, answering={"pg", "rabbit"})
    ensure_services(machine.c, cfg)
    assert machine.commands == []
    assert "PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) answering" in (
        capsys.readouterr().out
    )


def test_root_without_systemd_installs_then_starts_with_their_own_commands(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = FakeMachine(monkeypatch, installed=())
    ensure_services(machine.c, cfg)
    assert machine.commands == [
        "apt-get update",
        f"env DEBIAN_FRONTEND=noninteractive {INSTALL}",
        "pg_lsclusters --no-header",
        "systemctl is-system-running",
        "pg_ctlcluster --skip-systemctl-redirect 15 main start",
        "rabbitmq-server -detached",
    ]
    for call in calls(machine.c):
        assert call.kwargs["in_stream"] is False and call.kwargs["timeout"] > 0
    out = capsys.readouterr().out
    said, installed = out.index("installing postgresql rabbitmq-server"), out.index("Installed")
    assert said < installed and "with apt-get as root" in out
    assert "PostgreSQL 15/main (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) answering" in out


def test_sudo_prefixes_every_command_and_systemd_starts_the_units(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = FakeMachine(monkeypatch, root=False, sudo=True, systemd=True, installed=())
    ensure_services(machine.c, cfg)
    assert machine.commands == [
        "sudo -n true",
        "sudo -n apt-get update",
        f"sudo -n env DEBIAN_FRONTEND=noninteractive {INSTALL}",
        "pg_lsclusters --no-header",
        "systemctl is-system-running",
        "sudo -n systemctl start postgresql@15-main",
        "sudo -n systemctl start rabbitmq-server",
    ]
    assert "with apt-get with sudo" in capsys.readouterr().out


def test_installed_but_stopped_is_started_not_installed(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    machine = FakeMachine(monkeypatch, answering={"rabbit"})
    ensure_services(machine.c, cfg, allow_install=False)
    assert machine.commands == [
        "pg_lsclusters --no-header",
        "systemctl is-system-running",
        "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    ]


def test_without_root_or_sudo_it_prints_every_command_and_runs_none(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    machine = FakeMachine(monkeypatch, root=False, installed={"pg_lsclusters"})
    with pytest.raises(Exit) as stopped:
        ensure_services(machine.c, cfg)
    message = str(stopped.value.message)
    assert message.startswith(
        "RabbitMQ (127.0.0.1:5672) not installed; PostgreSQL 15/main (127.0.0.1:5432) stopped;"
    )
    assert (
        "run `sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "rabbitmq-server && sudo pg_ctlcluster --skip-systemctl-redirect 15 main start`, "
        "then `invoke up` again." in message
    )
    assert "\n" not in message
    assert machine.commands == [
        "pg_lsclusters --no-header",
        "sudo -n true",
        "systemctl is-system-running",
    ]


def test_no_install_refuses_with_the_exact_commands(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    machine = FakeMachine(monkeypatch, installed=())
    with pytest.raises(Exit) as stopped:
        ensure_services(machine.c, cfg, allow_install=False)
    assert str(stopped.value.message) == (
        "PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) not installed and "
        f"--no-install given; install with `{APT}`, then `invoke up` again."
    )
    assert machine.commands == []


def test_without_apt_it_names_the_packages(monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig) -> None:
    machine = FakeMachine(monkeypatch, installed={"rabbitmq-server"}, apt=False)
    with pytest.raises(Exit, match=r"PostgreSQL \(127.0.0.1:5432\) not installed and apt-get is"):
        ensure_services(machine.c, cfg)
    assert not machine.ran("apt-get", "start")


def test_remote_services_are_not_ours_to_manage(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine(monkeypatch, installed=())
    remote = load_config(
        "local", flags={"POSTGRES_HOST": "db.example", "RABBITMQ_HOST": "mq.example"}, environ={}
    )
    ensure_services(machine.c, remote)
    assert machine.commands == []


def test_a_failed_start_says_where_the_logs_are(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    start = "pg_ctlcluster --skip-systemctl-redirect 15 main start"
    failed = Result(stderr="Error: could not start server\n", exited=1)
    machine = FakeMachine(monkeypatch, answering={"rabbit"}, fail={start: failed})
    with pytest.raises(Exit) as stopped:
        ensure_services(machine.c, cfg)
    assert str(stopped.value.message) == (
        "Could not start PostgreSQL 15/main (see /var/log/postgresql/pg-15.log) "
        f"(`{start}`): Error: could not start server"
    )


def test_a_failed_apt_get_stops_before_starting(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    broken = Result(stderr="E: Could not get lock /var/lib/dpkg/lock-frontend\n", exited=100)
    machine = FakeMachine(monkeypatch, installed=(), fail={"apt-get update": broken})
    with pytest.raises(Exit, match="`apt-get update`\\): E: Could not get lock"):
        ensure_services(machine.c, cfg)
    assert machine.commands == ["apt-get update"]


def test_no_cluster_on_the_configured_port(monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig) -> None:
    other = CLUSTER.replace(" 5432 ", " 5433 ")
    machine = FakeMachine(monkeypatch, answering={"rabbit"}, clusters=other)
    with pytest.raises(Exit, match="no cluster uses port 5432"):
        ensure_services(machine.c, cfg)


def test_an_online_cluster_is_waited_for_not_started(
    monkeypatch: pytest.MonkeyPatch, cfg: EnvConfig
) -> None:
    online = CLUSTER.replace(" down ", " online ")
    machine = FakeMachine(monkeypatch, answering={"rabbit"}, clusters=online)
    probes = iter([False, False, True])  # found not answering, then starting, then up
    monkeypatch.setattr(services, "postgres_answers", lambda cfg: next(probes))
    sleeps: list[float] = []
    monkeypatch.setattr(services.time, "sleep", sleeps.append)
    ensure_services(machine.c, cfg)
    assert not machine.ran("start")
    assert sleeps == [services.POLL_SECONDS]


def test_the_wait_is_bounded_and_names_the_late_service(cfg: EnvConfig) -> None:
    probes: list[EnvConfig] = []

    def never(config: EnvConfig) -> bool:
        probes.append(config)
        return False

    late = Service(
        "RabbitMQ", "rabbitmq-server", "127.0.0.1:5672", "stopped", "/var/log/mq", never, hint="why"
    )
    sleeps: list[float] = []
    with pytest.raises(Exit) as stopped:
        wait_answering(cfg, [late], timeout=5, sleep=sleeps.append)
    assert str(stopped.value.message) == (
        "RabbitMQ (127.0.0.1:5672) did not answer within 5s; see /var/log/mq (why)."
    )
    assert len(probes) == len(sleeps) + 1 == math.ceil(5 / services.POLL_SECONDS) + 1
