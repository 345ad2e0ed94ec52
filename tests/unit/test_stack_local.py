"""Local stack pieces: supervisord conf, process environment, migrate and supervisord commands,
generated rabbitmqctl commands, the readiness wait (no real services: those are in
tests/integration)."""

from __future__ import annotations

import configparser
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest
from invoke import Exit, MockContext, Result
from support.mockrun import calls, commands

from desbordante_ops.core.files import write_private
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local import environ as stack_environ
from desbordante_ops.local.credentials import ensure_secrets, read_secret
from desbordante_ops.local.health import Health
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.local.provision import provision_rabbitmq
from desbordante_ops.local.stack import check_services
from desbordante_ops.local.supervise import (
    SERVICES,
    StackPaths,
    render_conf,
    supervisord_command,
)


@pytest.fixture
def cfg(tmp_path: Path) -> EnvConfig:
    return load_config("local", flags={"LOCAL_RUN_DIR": str(tmp_path / "run")}, environ={})


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    return ensure_secrets(root=tmp_path)


def test_stack_env_has_paths_not_values(cfg: EnvConfig, secret_files: dict[str, Path]) -> None:
    env = stack_environ.stack_env(cfg, secret_files, {"RABBITMQ_VHOST": "/"})
    assert env["POSTGRES_HOST"] == cfg.value("POSTGRES_HOST")
    assert env["RABBITMQ_VHOST"] == "/"
    assert env["FLOWER_PASSWORD_FILE"] == str(secret_files["FLOWER_PASSWORD"])
    assert Path(env["UPLOADED_FILES_DIR_PATH"]).is_absolute()
    assert "POSTGRES_PASSWORD" not in env and "FLOWER_PASSWORD" not in env
    for path in secret_files.values():
        assert read_secret(path) not in env.values()


def test_clean_environ_drops_backend_settings_and_secrets() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "POSTGRES_HOST": "elsewhere",
        "FLOWER_PASSWORD": "x",
        "POSTGRES_PASSWORD_FILE": "/tmp/x",
    }
    assert stack_environ.clean_environ(environ) == {"PATH": "/usr/bin", "HOME": "/root"}


def parse_conf(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_supervisord_conf(cfg: EnvConfig, secret_files: dict[str, Path], tmp_path: Path) -> None:
    paths = StackPaths(cfg.run_dir)
    env = stack_environ.stack_env(cfg, secret_files)
    conf = render_conf(paths, env, "/venv/bin/python", tmp_path)
    parsed = parse_conf(conf)
    assert parsed.get("unix_http_server", "file") == str(paths.socket)
    assert parsed.get("unix_http_server", "chmod") == "0700"
    assert parsed.get("supervisord", "pidfile") == str(paths.pidfile)
    for service in SERVICES:
        section = f"program:{service}"
        assert (
            parsed.get(section, "command") == f"/venv/bin/python -m desbordante_service {service}"
        )
        assert parsed.get(section, "stopasgroup") == "true"
        assert parsed.get(section, "killasgroup") == "true"
        assert parsed.get(section, "autostart") == "false"
        assert 0 < int(parsed.get(section, "stopwaitsecs")) <= 60
        assert parsed.get(section, "stdout_logfile") == str(paths.log(service))
        environment = parsed.get(section, "environment")
        assert f'FLOWER_PASSWORD_FILE="{secret_files["FLOWER_PASSWORD"]}"' in environment
    for path in secret_files.values():
        assert read_secret(path) not in conf


def test_conf_is_valid_for_supervisord(cfg: EnvConfig, secret_files: dict[str, Path]) -> None:
    """supervisord's own parser accepts the conf and sees the environment we meant."""
    from supervisor.options import ServerOptions

    paths = StackPaths(cfg.run_dir)
    paths.prepare()
    env = {**stack_environ.stack_env(cfg, secret_files), "ODD": "100%,with comma"}
    write_private(paths.conf, render_conf(paths, env, sys.executable, cfg.root))
    options = ServerOptions()
    options.realize(args=["-c", str(paths.conf)])
    programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(programs) == set(SERVICES)
    assert programs["worker"].environment["ODD"] == "100%,with comma"
    assert programs["api"].environment["POSTGRES_HOST"] == cfg.value("POSTGRES_HOST")
    assert programs["worker"].stopasgroup and programs["worker"].killasgroup


def test_conf_rejects_quotes(cfg: EnvConfig, tmp_path: Path) -> None:
    with pytest.raises(Exit, match="BAD contains a quote"):
        render_conf(StackPaths(cfg.run_dir), {"BAD": 'a"b'}, "python", tmp_path)


def test_write_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_commands() -> None:
    command = stack_environ.service_command("migrate", python="/v/bin/python")
    assert command == "/v/bin/python -m desbordante_service migrate"
    conf = Path("/r/.run/local/supervisord.conf")
    assert supervisord_command("/v/bin/python", conf) == [
        "/v/bin/python",
        "-m",
        "supervisor.supervisord",
        "-c",
        str(conf),
    ]


def test_migrate_runs_with_stack_environment(
    cfg: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "leaked")  # must not reach the process
    c = MockContext(run=Result(exited=0))
    ProcessStack(c, cfg).migrate({"POSTGRES_HOST": "h", "POSTGRES_PASSWORD_FILE": "/s/p"})
    args, kwargs = calls(c)[-1]
    assert args == (f"{sys.executable} -m desbordante_service migrate",)
    assert kwargs["replace_env"] is True and kwargs["in_stream"] is False
    assert kwargs["env"]["POSTGRES_HOST"] == "h"
    assert kwargs["env"]["POSTGRES_PASSWORD_FILE"] == "/s/p"
    assert "POSTGRES_PASSWORD" not in kwargs["env"]


def test_migrate_failure_is_one_clear_exit(
    cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = Result(
        stderr="boom\nPOSTGRES_DB: required environment variable is not set\n", exited=2
    )
    with pytest.raises(Exit, match="migrate failed: POSTGRES_DB: required"):
        ProcessStack(MockContext(run=failed), cfg).migrate({})
    assert "boom" in capsys.readouterr().out


def test_logs_unknown_service(cfg: EnvConfig) -> None:
    with pytest.raises(Exit, match="Unknown service 'db'"):
        check_services(["db"])
    assert check_services(None) == list(SERVICES)
    with pytest.raises(Exit, match="No logs yet"):
        ProcessStack(MockContext(), cfg).logs(["api"], follow=False, lines=5)


def test_down_when_not_running(cfg: EnvConfig, capsys: pytest.CaptureFixture[str]) -> None:
    ProcessStack(MockContext(), cfg).down(timeout=1)
    assert "not running" in capsys.readouterr().out
    assert not ProcessStack(MockContext(), cfg).is_running()


def test_stack_paths(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "r")
    paths.prepare()
    assert stat.S_IMODE(paths.logs_dir.stat().st_mode) == 0o700
    assert paths.log("api") == tmp_path / "r" / "logs" / "api.log"


def test_rabbitmq_guest_fallback_without_rabbitmqctl(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("desbordante_ops.local.provision.shutil.which", lambda name: None)
    local = load_config("local", environ={}, root=_copy_env(tmp_path))
    access = provision_rabbitmq(MockContext(), local, tmp_path / "unused")
    assert access.overrides == {"RABBITMQ_DEFAULT_USER": "guest", "RABBITMQ_VHOST": "/"}
    assert read_secret(access.password_file) == "guest"
    assert stat.S_IMODE(access.password_file.stat().st_mode) == 0o600
    assert "falling back to RabbitMQ guest/guest" in capsys.readouterr().out


def _copy_env(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "env").mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / "env" / "local.env"
    shutil.copy(source, root / "env" / "local.env")
    return root


def test_rabbitmq_password_reaches_rabbitmqctl_on_stdin_from_the_secret_file(
    cfg: EnvConfig, secret_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("desbordante_ops.local.provision.shutil.which", lambda name: "/sbin/ctl")
    c = MockContext(
        run={
            re.compile(r".* list_vhosts .*"): Result("desbordante\n"),
            re.compile(r".* list_users$"): Result("guest\t[administrator]\n"),
            re.compile(r".*"): Result(""),
        },
        repeat=True,
    )
    provision_rabbitmq(c, cfg, secret_files["RABBITMQ_DEFAULT_PASSWORD"])
    ran = commands(c)
    password_file = secret_files["RABBITMQ_DEFAULT_PASSWORD"]
    assert f"/sbin/ctl -q add_user desbordante < {password_file}" in ran
    assert read_secret(password_file) not in " ".join(ran)


class StubStack(ProcessStack):
    """A process stack whose services are all FATAL (supervisord's answer is not needed)."""

    def health(self, service: str) -> Health:
        return Health(False, "fatal (exit 2)", failed=True)


def test_wait_ready_reports_the_failing_service_log(
    cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = StubStack(MockContext(), cfg)
    stack.paths.prepare()
    stack.paths.log("api").write_text(
        "starting\nPOSTGRES_DB: required environment variable is not set\n"
    )
    with pytest.raises(Exit, match="api, worker, flower did not become ready"):
        stack.wait_ready(timeout=5)
    out = capsys.readouterr().out
    assert "POSTGRES_DB: required environment variable is not set" in out
    assert "fatal (exit 2)" in out
