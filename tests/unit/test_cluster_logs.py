"""`invoke logs --env stage|prod`: the kubectl command, its options, and a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import stat
from pathlib import Path

import pytest
from invoke import Context, Exit, MockContext, Result
from support.mockrun import calls, commands

from desbordante_ops.cluster import logs as cluster_logs
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.tasks import local as local_tasks

ALL = "app.kubernetes.io/name=desbordante,app.kubernetes.io/component in " + (
    "(api,worker,flower,postgres,rabbitmq,migrate,retention)"
)


@pytest.fixture
def cfg() -> EnvConfig:
    return load_config("stage", environ={})


def test_all_services_by_default_each_line_prefixed(cfg: EnvConfig) -> None:
    argv = shlex.split(
        cluster_logs.logs_command(cfg, cluster_logs.check_services([]), False, None, 50)
    )
    assert argv[:3] == ["kubectl", "--kubeconfig", cfg.toolkit.KUBECONFIG_PATH]
    assert argv[3:] == [
        "-n",
        "desbordante-stage",
        "logs",
        "-l",
        ALL,
        "--prefix",
        "--all-containers",
        "--max-log-requests=50",
        "--tail=50",
    ]


def test_one_service_followed_since(cfg: EnvConfig) -> None:
    command = cluster_logs.logs_command(cfg, ["worker", "api"], True, "1h30m", 10)
    argv = shlex.split(command)
    assert "app.kubernetes.io/component in (worker,api)" in argv[argv.index("-l") + 1]
    assert argv[-4:] == ["--tail=10", "--since=1h30m", "--follow", "--ignore-errors"]


@pytest.mark.parametrize("since", ["10", "m", "1d", "10 m", "-5m", "5m;rm"])
def test_bad_since_is_one_line(cfg: EnvConfig, since: str) -> None:
    with pytest.raises(Exit, match="use a duration such as 10m, 1h or 1h30m"):
        cluster_logs.logs_command(cfg, ["api"], False, since, 50)


def test_unknown_service_names_the_known_ones(cfg: EnvConfig) -> None:
    with pytest.raises(Exit, match="Unknown service 'web'; use one of: api, worker, flower, "):
        cluster_logs.show(MockContext(), cfg, ["web"])


def test_task_dispatches_env_and_refuses_since_locally() -> None:
    c = MockContext(run=Result("[pod/api-1/api] started\n"))
    local_tasks.logs(c, env="stage", service=["api"], since="5m")
    (call,) = calls(c)
    assert " logs -l " in call.args[0] and "--since=5m" in call.args[0]
    assert call.kwargs["in_stream"] is False and call.kwargs["pty"] is False
    with pytest.raises(Exit, match=r"--since works with --env stage\|prod"):
        local_tasks.logs(MockContext(), since="5m")
    with pytest.raises(Exit, match="this works on a cluster"):
        local_tasks.logs(MockContext(), env="qa")


def test_a_kubectl_failure_is_one_line(cfg: EnvConfig) -> None:
    c = MockContext(run=Result(stderr="error: You must be logged in to the server", exited=1))
    with pytest.raises(Exit, match=r"kubectl logs failed \(1\); see its message above"):
        cluster_logs.show(c, cfg, ["api"])


def test_ctrl_c_while_following_stops_cleanly(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stand-in kubectl prints a line, then Ctrl-C arrives as a terminal sends it (to us, and
    kubectl ends): the task returns normally and our SIGINT handling is as before."""
    fake = tmp_path / "kubectl"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "[pod/api-1/api] GET /health/live 200"\n'
        "sleep 0.5\n"  # following: Invoke is waiting for more output
        'kill -INT "$TEST_PARENT_PID"\n'
        "sleep 0.2\n"
        "exit 130\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TEST_PARENT_PID", str(os.getpid()))
    before = signal.getsignal(signal.SIGINT)
    cluster_logs.show(Context(), cfg, ["api"], follow=True)
    assert signal.getsignal(signal.SIGINT) is before
    out = capsys.readouterr().out
    assert "[pod/api-1/api] GET /health/live 200" in out and "stopped following (Ctrl-C)" in out


def test_local_logs_without_a_service_show_every_service(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    for name in ("api", "worker", "flower"):
        (run_dir / "logs" / f"{name}.log").write_text(f"{name} started\n")
    c = MockContext(run=Result(""))
    local_tasks.logs(c, set_=[f"LOCAL_RUN_DIR={run_dir}"])
    (command,) = commands(c)
    argv = shlex.split(command)
    assert argv[:3] == ["tail", "-n", "50"]
    assert argv[3:] == [str(run_dir / "logs" / f"{n}.log") for n in ("api", "worker", "flower")]
