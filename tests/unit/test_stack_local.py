"""Local stack pieces: supervisord conf, process environment, migrate and supervisord commands,
and provisioning on the real local PostgreSQL and RabbitMQ (throwaway role/db/user/vhost)."""

from __future__ import annotations

import configparser
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from invoke import Context, Exit, MockContext, Result

from desbordante_ops import stack
from desbordante_ops.config import EnvConfig, load_config
from desbordante_ops.localsecrets import ensure_secrets, read_secret
from desbordante_ops.provision import provision_postgres, provision_rabbitmq
from desbordante_ops.supervise import (
    SERVICES,
    StackPaths,
    render_conf,
    supervisord_command,
    write_private,
)


@pytest.fixture
def cfg(tmp_path: Path) -> EnvConfig:
    return load_config("local", flags={"LOCAL_RUN_DIR": str(tmp_path / "run")}, environ={})


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    return ensure_secrets(root=tmp_path)


def test_stack_env_has_paths_not_values(cfg: EnvConfig, secret_files: dict[str, Path]) -> None:
    env = stack.stack_env(cfg, secret_files, {"RABBITMQ_VHOST": "/"})
    assert env["POSTGRES_HOST"] == cfg["POSTGRES_HOST"]
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
    assert stack.clean_environ(environ) == {"PATH": "/usr/bin", "HOME": "/root"}


def parse_conf(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_supervisord_conf(cfg: EnvConfig, secret_files: dict[str, Path], tmp_path: Path) -> None:
    paths = stack.paths_for(cfg)
    env = stack.stack_env(cfg, secret_files)
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

    paths = stack.paths_for(cfg)
    paths.prepare()
    env = {**stack.stack_env(cfg, secret_files), "ODD": "100%,with comma"}
    write_private(paths.conf, render_conf(paths, env, sys.executable, cfg.root))
    options = ServerOptions()
    options.realize(args=["-c", str(paths.conf)])
    programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(programs) == set(SERVICES)
    assert programs["worker"].environment["ODD"] == "100%,with comma"
    assert programs["api"].environment["POSTGRES_HOST"] == cfg["POSTGRES_HOST"]
    assert programs["worker"].stopasgroup and programs["worker"].killasgroup


def test_conf_rejects_quotes(cfg: EnvConfig, tmp_path: Path) -> None:
    with pytest.raises(Exit, match="BAD contains a quote"):
        render_conf(stack.paths_for(cfg), {"BAD": 'a"b'}, "python", tmp_path)


def test_write_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_commands() -> None:
    assert stack.migrate_command("/v/bin/python") == "/v/bin/python -m desbordante_service migrate"
    conf = Path("/r/.run/local/supervisord.conf")
    assert supervisord_command("/v/bin/python", conf) == [
        "/v/bin/python",
        "-m",
        "supervisor.supervisord",
        "-c",
        str(conf),
    ]


def test_migrate_runs_with_stack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "leaked")  # must not reach the process
    c = MockContext(run=Result(exited=0))
    stack.migrate(c, {"POSTGRES_HOST": "h", "POSTGRES_PASSWORD_FILE": "/s/p"}, python="/py")
    args, kwargs = c.run.call_args
    assert args == ("/py -m desbordante_service migrate",)
    assert kwargs["replace_env"] is True and kwargs["in_stream"] is False
    assert kwargs["env"]["POSTGRES_HOST"] == "h"
    assert kwargs["env"]["POSTGRES_PASSWORD_FILE"] == "/s/p"
    assert "POSTGRES_PASSWORD" not in kwargs["env"]


def test_migrate_failure_is_one_clear_exit(capsys: pytest.CaptureFixture[str]) -> None:
    failed = Result(
        stderr="boom\nPOSTGRES_DB: required environment variable is not set\n", exited=2
    )
    with pytest.raises(Exit, match="migrate failed \\(exit 2\\): POSTGRES_DB: required"):
        stack.migrate(MockContext(run=failed), {})
    assert "boom" in capsys.readouterr().out


def test_logs_unknown_service(cfg: EnvConfig) -> None:
    with pytest.raises(Exit, match="Unknown service 'db'"):
        stack.logs(MockContext(), cfg, "db")
    with pytest.raises(Exit, match="No logs yet"):
        stack.logs(MockContext(), cfg, "api")


def test_down_when_not_running(cfg: EnvConfig, capsys: pytest.CaptureFixture[str]) -> None:
    stack.down(MockContext(), cfg)
    assert "not running" in capsys.readouterr().out
    assert not stack.is_running(cfg)


def test_stack_paths(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "r")
    paths.prepare()
    assert stat.S_IMODE(paths.logs_dir.stat().st_mode) == 0o700
    assert paths.log("api") == tmp_path / "r" / "logs" / "api.log"


# --- provisioning on the real services --------------------------------------------------------


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[EnvConfig]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    cfg = load_config(
        "local",
        flags={
            "POSTGRES_USER": name,
            "POSTGRES_DB": name,
            "RABBITMQ_DEFAULT_USER": name,
            "RABBITMQ_VHOST": name,
        },
        environ={},
        root=Path(__file__).resolve().parents[2],
    )
    yield cfg
    with psycopg.connect(host=cfg["POSTGRES_HOST"], user="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "-q", "delete_user", name], capture_output=True, check=False)
        subprocess.run([ctl, "-q", "delete_vhost", name], capture_output=True, check=False)


def test_provision_postgres_real(
    throwaway: EnvConfig, secret_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = throwaway
    for _ in range(2):  # second run: exists, password re-synced
        provision_postgres(cfg, secret_files["POSTGRES_PASSWORD"])
    password = read_secret(secret_files["POSTGRES_PASSWORD"])
    with psycopg.connect(
        host=cfg["POSTGRES_HOST"],
        user=cfg["POSTGRES_USER"],
        dbname=cfg["POSTGRES_DB"],
        password=password,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (cfg["POSTGRES_USER"],)
    out = capsys.readouterr().out
    assert "created" in out and "exists (password synced)" in out
    assert password not in out


def test_provision_rabbitmq_real(
    throwaway: EnvConfig, secret_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl not installed")
    cfg = throwaway
    for _ in range(2):
        access = provision_rabbitmq(Context(), cfg, secret_files["RABBITMQ_DEFAULT_PASSWORD"])
    assert access.overrides == {}
    password = read_secret(secret_files["RABBITMQ_DEFAULT_PASSWORD"])
    check = subprocess.run(
        [ctl, "-q", "authenticate_user", cfg["RABBITMQ_DEFAULT_USER"]],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    out = capsys.readouterr().out
    assert "created" in out and password not in out


def test_rabbitmq_guest_fallback_without_rabbitmqctl(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("desbordante_ops.provision.shutil.which", lambda name: None)
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


class StubSupervisor:
    """Stands in for supervisord's answers (our own XML-RPC client, not a service)."""

    def __init__(self, paths: StackPaths, states: dict[str, str]) -> None:
        self.paths = paths
        self.states = states

    def processes(self) -> dict[str, dict]:
        return {
            name: {"statename": state, "pid": 0, "exitstatus": 2}
            for name, state in self.states.items()
        }


def test_wait_ready_reports_the_failing_service_log(
    cfg: EnvConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = stack.paths_for(cfg)
    paths.prepare()
    paths.log("api").write_text("starting\nPOSTGRES_DB: required environment variable is not set\n")
    sup = StubSupervisor(paths, {"api": "FATAL", "worker": "FATAL", "flower": "FATAL"})
    with pytest.raises(Exit, match="api, worker, flower did not become ready"):
        stack.wait_ready(sup, cfg, timeout=5)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "POSTGRES_DB: required environment variable is not set" in out
    assert "fatal (exit 2)" in out
