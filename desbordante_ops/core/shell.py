"""Running outside tools (kubectl, git, pip, systemctl, pg_dump, ...) through the Invoke context.

`run` is the one way the toolkit runs a command whose failure stops the task: output hidden
unless asked for, never our stdin (a piped answer meant for a prompt must not be eaten; STDIN
text is fed instead when given), and a failure turned into one line: what failed and the last
line the tool wrote (or what to install when the tool is missing). `attempt` runs a command
whose failure the caller interprets itself. `command_step` is the plan step of a command: its
row is the command line, so a dry run shows exactly what the run executes. No command line
ever carries a secret (they are visible in `ps`): secrets travel on stdin or in 0600 files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from invoke import Context, Exit, Result

from desbordante_ops.core.plan import Step

NOT_FOUND = 127  # the shell's exit status for a command it cannot find


def last_line(result: Result) -> str:
    """The last line a command wrote (stderr first), for a one-line error."""
    for text in (result.stderr, result.stdout):
        lines = [line for line in (text or "").strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return f"exit {result.exited}, no output"


def attempt(
    c: Context,
    command: str,
    *,
    hide: bool | str = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    replace_env: bool = False,
    stdin: str | None = None,
) -> Result:
    """Run COMMAND and return its Result whatever its exit code (the caller decides).

    ENV is added to the environment (REPLACE_ENV: it is the whole environment); STDIN is fed
    to the command (never our own standard input).
    """
    return c.run(
        command,
        hide=hide,
        warn=True,
        pty=False,
        in_stream=io.StringIO(stdin) if stdin is not None else False,
        timeout=timeout,
        env=dict(env or {}),
        replace_env=replace_env,
    )


def run(
    c: Context,
    command: str,
    what: str,
    *,
    hide: bool | str = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    replace_env: bool = False,
    stdin: str | None = None,
    codes: tuple[int, ...] = (0,),
    missing: str = "",
) -> Result:
    """Run COMMAND; Exit("WHAT failed: <its last line>.") unless it exits with one of CODES.

    When the tool's error output is on screen (HIDE False or "stdout"), the line points there;
    MISSING is the line for a command that is not installed (exit 127).
    """
    result = attempt(
        c, command, hide=hide, timeout=timeout, env=env, replace_env=replace_env, stdin=stdin
    )
    if result.exited in codes:
        return result
    if missing and result.exited == NOT_FOUND:
        raise Exit(missing)
    captured = hide in (True, "both", "stderr", "err")
    detail = last_line(result) if captured else f"exit {result.exited}; see its output above"
    raise Exit(f"{what} failed: {detail.rstrip('.')}.")


def command_step(
    c: Context,
    command: str,
    what: str,
    *,
    action: str = "run",
    hide: bool | str = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Step:
    """The plan step running COMMAND (its row shows the command line, never a secret)."""
    return Step(action, command, lambda: run(c, command, what, hide=hide, timeout=timeout, env=env))
