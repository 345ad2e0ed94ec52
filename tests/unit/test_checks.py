"""Doctor: Check objects, pass/fail, the table and the exit code; host checks on real sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from invoke import Context, Exit

from desbordante_ops.cluster.host.tools import server_checks
from desbordante_ops.core import checks as doctor
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.core.settings import load_config
from desbordante_ops.local import preflight as host


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


def test_an_unchecked_row_is_shown_as_such_and_is_no_failure(
    capsys: pytest.CaptureFixture[str], wide_console: None
) -> None:
    """A check the credential may not read: "not checked" and why, no fix, no exit."""
    why = "not checked: needs list nodes (cluster-wide); a cluster admin runs it"
    report = doctor.run_checks(
        [Check("a", passing, "x"), Check("nodes", lambda: Result(False, why, unchecked=True), "f")]
    )
    assert report.failed_required == []
    doctor.ensure(report)  # no Exit
    doctor.print_report(report)
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "nodes" in line]
    cells = [" ".join(cell.split()) for cell in row.split("│")[1:-1]]
    assert cells == [
        "nodes",
        "not checked: needs list nodes (cluster-wide); a cluster admin runs it",
        "",
    ]


def test_python_version() -> None:
    assert host.python_version((3, 11, 7)).ok
    assert not host.python_version((3, 10, 12)).ok


def test_port_in_use_and_owned(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    busy = host.port_free("127.0.0.1", port, "FLOWER_PORT")
    assert not busy.ok
    assert f"pid {os.getpid()}" in busy.detail and "FLOWER_PORT" in busy.fix
    ours = host.port_free("127.0.0.1", port, "FLOWER_PORT", ours=lambda: {os.getpid()})
    assert ours.ok and "our running stack" in ours.detail


def test_port_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert host.port_free("127.0.0.1", port, "X").ok


def test_disk_free(tmp_path: Path) -> None:
    assert host.disk_free(tmp_path, 1).ok
    assert not host.disk_free(tmp_path, 10**12).ok


def test_local_checks_cover_the_issue_list() -> None:
    cfg = load_config("local", environ={})
    names = [check.name for check in host.local_checks(Context(), cfg)]
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
    optional = {check.name: check.required for check in server_checks(Context())}
    assert optional == {"Docker engine": False, "kubectl": False, "k3s": False}
