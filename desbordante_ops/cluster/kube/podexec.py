"""Commands in a pod's container through the API (`pods/exec`), stdin carried on the stream."""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Protocol

import yaml
from kubernetes.stream import stream

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import TRANSPORT_ERRORS, describe_error

EXEC_TIMEOUT_SECONDS = 60


class PodExec(Protocol):
    """Runs ARGV in a container with STDIN on its standard input; returns (exit code, output)."""

    def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]: ...


class ExecFailed(Exception):
    """A pod exec that gave no trustworthy exit status (transport error, drop or timeout)."""


def _exit_code(resp: Any) -> int | None:
    """The exec's exit status, None when the stream ended without one (dropped connection)."""
    try:
        code = resp.returncode
    except (KeyError, TypeError, ValueError, IndexError, yaml.YAMLError):
        return None  # the status channel was empty or garbled
    return None if code is None else int(code)


def pod_exec(kube: Kube, namespace: str, pod: str, container: str | None = None) -> PodExec:
    """A PodExec running commands in POD through the API (stdin over the exec stream).

    Nothing sensitive goes into ARGV: values travel on stdin only. Commands are written so they
    finish after reading what they need (no EOF required), since older exec protocols (v4)
    cannot half-close stdin; with v5 stdin is closed as well. A transport error, a drop or a
    timeout raises ExecFailed (one line): the caller cannot know whether the command ran.
    """

    def run(argv: list[str], stdin: str) -> tuple[int, str]:
        kwargs: dict[str, Any] = {"container": container} if container else {}
        where = f"`{argv[0]}` in pod {namespace}/{pod}"
        try:
            resp = stream(
                kube.core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=argv,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                **kwargs,
            )
        except TRANSPORT_ERRORS as exc:
            raise ExecFailed(f"{where} could not start: {describe_error(exc)}") from None
        try:
            resp.write_stdin(stdin)
            resp.close_channel(0)
            resp.run_forever(timeout=EXEC_TIMEOUT_SECONDS)
            output = resp.read_stdout(timeout=1) + resp.read_stderr(timeout=1)
            code = _exit_code(resp)
        except TRANSPORT_ERRORS as exc:
            raise ExecFailed(f"{where}: connection lost ({describe_error(exc)})") from None
        finally:
            with suppress(*TRANSPORT_ERRORS):
                resp.close()
        if code is None:
            raise ExecFailed(
                f"{where} gave no exit status within {EXEC_TIMEOUT_SECONDS} s "
                "(connection dropped or command still running)"
            )
        return code, output

    return run
