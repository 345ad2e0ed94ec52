"""What this machine lets the toolkit do: root or passwordless sudo, systemd, apt-get.

Every probe runs through the Invoke context (or looks at PATH), so tests drive each case
with `invoke.MockContext`. `Privilege` turns a command into the one to run (prefixed with
`sudo -n` when we are not root) and into the one to print for a person to run.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from invoke import Context

from desbordante_ops.core.shell import attempt

# `systemctl is-system-running` states in which systemd manages services ("offline": not PID 1).
SYSTEMD_STATES = ("initializing", "starting", "running", "degraded", "maintenance")
PROBE_TIMEOUT = 15
# Directories of administration tools that a non-root PATH often lacks.
ADMIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def first_line(error: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def last_line(output: str) -> str:
    """The last non-empty line of a command's output."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def find_tool(name: str) -> str | None:
    """Path of NAME on PATH, or in the sbin directories (a non-root PATH may omit them)."""
    return shutil.which(name) or shutil.which(name, path=ADMIN_PATH)


@dataclass(frozen=True)
class Privilege:
    """Whether commands may run as root: we are root, or `sudo -n` works."""

    root: bool
    sudo: bool

    @property
    def granted(self) -> bool:
        return self.root or self.sudo

    @property
    def how(self) -> str:
        return "as root" if self.root else "with sudo"

    def as_root(self, argv: Sequence[str]) -> list[str]:
        """ARGV as root: unchanged when root, else through passwordless sudo."""
        return list(argv) if self.root else ["sudo", "-n", *argv]

    def as_user(self, user: str, argv: Sequence[str]) -> list[str]:
        """ARGV as the OS user USER (runuser when root, else sudo -u)."""
        if self.root:
            return ["runuser", "-u", user, "--", *argv]
        return ["sudo", "-n", "-u", user, "--", *argv]


def for_person(argv: Sequence[str]) -> str:
    """ARGV as a person without root types it."""
    return shlex.join(["sudo", *argv])


def privilege(c: Context) -> Privilege:
    """Root, or else whether sudo works without a password (`sudo -n true`)."""
    if os.geteuid() == 0:
        return Privilege(root=True, sudo=False)
    if find_tool("sudo") is None:
        return Privilege(root=False, sudo=False)
    result = attempt(c, "sudo -n true", timeout=PROBE_TIMEOUT)
    return Privilege(root=False, sudo=bool(result.ok))


def systemd_running(c: Context) -> bool:
    """systemd is PID 1 and manages services (else services start with their own commands)."""
    if find_tool("systemctl") is None:
        return False
    result = attempt(c, "systemctl is-system-running", timeout=PROBE_TIMEOUT)
    return (result.stdout or "").strip() in SYSTEMD_STATES


def apt_available() -> bool:
    return find_tool("apt-get") is not None
