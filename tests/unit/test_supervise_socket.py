"""The supervisord socket path stays short enough for AF_UNIX in a deep checkout."""

from __future__ import annotations

from pathlib import Path

from desbordante_ops.local.supervise import SOCKET_PATH_MAX, StackPaths


def test_socket_lives_in_the_run_directory_when_the_path_is_short() -> None:
    paths = StackPaths(Path("/srv/ops/.run/local"))

    assert paths.socket == Path("/srv/ops/.run/local/supervisor.sock")


def test_deep_run_directory_gets_a_short_private_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("very-long-directory-name-" * 4) / ".run" / "local"
    paths = StackPaths(deep)

    paths.prepare()

    assert len(str(paths.socket)) <= SOCKET_PATH_MAX + 20 < 107
    assert paths.socket != StackPaths(tmp_path / "other" / ("x" * 90)).socket
    assert paths.socket.parent.stat().st_mode & 0o777 == 0o700
