"""Doctor: Check objects, pass/fail, the table and the exit code; real sockets and services."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke import Exit

from desbordante_ops import doctor
from desbordante_ops.config import load_config
from desbordante_ops.doctor import Check, Result


def passing() -> Result:
    return Result(True, "fine")


def failing() -> Result:
    return Result(False, "broken")


def crashing() -> Result:
    raise RuntimeError("boom")


def test_required_failure_exits(capsys: pytest.CaptureFixture[str]) -> None:
    report = doctor.run_checks(
        [Check("a", passing, "fix-a"), Check("b", failing, "fix-b"), Check("c", crashing, "fix-c")]
    )
    assert [r.ok for _, r in report.rows] == [True, False, False]
    assert "RuntimeError: boom" in report.rows[2][1].detail
    doctor.print_report(report)
    out = capsys.readouterr().out
    assert "fix-b" in out and "fix-c" in out and "fix-a" not in out
    with pytest.raises(Exit, match="Required check\\(s\\) failed: b, c"):
        doctor.ensure(report)


def test_optional_failure_does_not_exit(capsys: pytest.CaptureFixture[str]) -> None:
    report = doctor.run_checks(
        [Check("a", passing, "x"), Check("opt", failing, "install it", required=False)]
    )
    doctor.ensure(report)  # no Exit
    doctor.print_report(report)
    out = capsys.readouterr().out
    assert "optional" in out and "install it" in out


def test_result_fix_overrides_generic_fix(capsys: pytest.CaptureFixture[str]) -> None:
    report = doctor.run_checks([Check("p", lambda: Result(False, "x", "specific"), "generic")])
    doctor.print_report(report)
    out = capsys.readouterr().out
    assert "specific" in out and "generic" not in out


def test_python_version() -> None:
    assert doctor.python_version((3, 11, 7)).ok
    assert not doctor.python_version((3, 10, 12)).ok


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def test_port_in_use_and_owned(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    busy = doctor.port_free("127.0.0.1", port, "FLOWER_PORT")
    assert not busy.ok
    assert f"pid {os.getpid()}" in busy.detail and "FLOWER_PORT" in busy.fix
    ours = doctor.port_free("127.0.0.1", port, "FLOWER_PORT", ours=lambda: {os.getpid()})
    assert ours.ok and "our running stack" in ours.detail


def test_port_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert doctor.port_free("127.0.0.1", port, "X").ok


def test_amqp_real_broker_and_impostor(listener: socket.socket) -> None:
    cfg = load_config("local", environ={})
    assert doctor.rabbitmq_reachable(cfg).ok

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(8)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    impostor = doctor.amqp_reachable("127.0.0.1", listener.getsockname()[1], timeout=2)
    thread.join(timeout=5)
    assert not impostor.ok and "not as an AMQP" in impostor.detail


def test_amqp_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not doctor.amqp_reachable("127.0.0.1", port, timeout=1).ok


def test_postgres_real_and_wrong_port() -> None:
    assert doctor.postgres_reachable(load_config("local", environ={})).ok
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    wrong = load_config("local", flags={"POSTGRES_PORT": port}, environ={})
    result = doctor.postgres_reachable(wrong)
    assert not result.ok and port in result.detail


def test_disk_free(tmp_path: Path) -> None:
    assert doctor.disk_free(tmp_path, 1).ok
    assert not doctor.disk_free(tmp_path, 10**12).ok


def test_local_checks_cover_the_issue_list() -> None:
    names = [check.name for check in doctor.local_checks(load_config("local", environ={}))]
    for expected in (
        "Python",
        "backend",
        "PostgreSQL",
        "RabbitMQ",
        "API port",
        "Flower port",
        "disk",
    ):
        assert any(expected in name for name in names), expected
    optional = {check.name: check.required for check in doctor.tooling_checks()}
    assert optional == {"Docker engine": False, "kubectl": False, "k3s": False}
