"""The systemd timer and oneshot service that run auto-update cycles on the server.

`desbordante-autoupdate-<env>.timer` starts `desbordante-autoupdate-<env>.service` 30 s after it
is activated (enable, boot) and then INTERVAL after each cycle *finished* (OnUnitInactiveSec),
so cycles never pile up behind a long deploy. The service runs `invoke autoupdate.run --once`
of this checkout as root with the admin kubeconfig (it records releases in the ledger, which
only an admin may write), niced and with a memory cap that leaves the 2 GiB server to the
workloads. systemctl runs through the Invoke context, so tests see every command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from invoke import Context, Exit

from desbordante_ops.core.shell import NOT_FOUND, attempt, run

UNIT_DIR = Path("/etc/systemd/system")
INTERVAL = re.compile(r"^(?P<number>[1-9]\d*)(?P<unit>s|m|h)?$")
SECONDS = {"s": 1, "m": 60, "h": 3600}
MIN_INTERVAL_SECONDS = 30
MAX_INTERVAL_SECONDS = 24 * 3600
FIRST_RUN = "30s"
MEMORY_MAX = "512M"
NO_SYSTEMD = "systemctl not found: auto-update needs systemd (Debian/Ubuntu server)."
SHOWN = ("UnitFileState", "ActiveState", "LastTriggerUSec", "NextElapseUSecRealtime")


def unit_name(env: str) -> str:
    return f"desbordante-autoupdate-{env}"


def interval_seconds(text: str) -> int:
    """`90s`, `2m`, `1h` (or plain seconds) as seconds; Exit outside 30 s .. 24 h."""
    match = INTERVAL.match(text.strip())
    if match is None:
        raise Exit(f"--interval {text!r}: give e.g. 2m, 90s or 1h.")
    seconds = int(match["number"]) * SECONDS[match["unit"] or "s"]
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise Exit(f"--interval {text}: use between {MIN_INTERVAL_SECONDS} s and 24 h.")
    return seconds


def literal(text: str) -> str:
    """TEXT as systemd reads it literally in a unit file (no %specifiers)."""
    return text.replace("%", "%%")


def service_unit(
    env: str,
    repo: Path,
    invoke: Path,
    arguments: list[str],
    environment: dict[str, str],
    timeout_seconds: int,
) -> str:
    """The oneshot service: `INVOKE autoupdate.run --once --env ENV ARGUMENTS` in REPO.

    ENVIRONMENT holds settings only (paths, no secret): the registry credentials are read
    from their root-only file by the cycle itself.
    """
    # systemd expands $VARIABLES in the arguments (not in the program path): $$ is a dollar.
    args = shlex.join(["autoupdate.run", "--once", "--env", env, *arguments]).replace("$", "$$")
    command = f"{shlex.quote(str(invoke))} {args}"
    lines = "\n".join(
        f"Environment={literal(shlex.quote(f'{key}={value}'))}"
        for key, value in {"HOME": "/root", **environment}.items()
    )
    docs = literal((repo / "docs" / "autoupdate.md").as_uri())
    return f"""\
# Written by `invoke autoupdate.enable --env {env}`; removed by `invoke autoupdate.disable`.
[Unit]
Description=desbordante-ops: one auto-update cycle of {env}
Documentation={docs}
After=network-online.target k3s.service
Wants=network-online.target

[Service]
Type=oneshot
WorkingDirectory={literal(str(repo))}
{lines}
ExecStart={literal(command)}
TimeoutStartSec={timeout_seconds}
Nice=10
MemoryMax={MEMORY_MAX}
"""


def timer_unit(env: str, interval: int) -> str:
    """The timer: first cycle FIRST_RUN after activation, then INTERVAL after each cycle."""
    return f"""\
# Written by `invoke autoupdate.enable --env {env}`; removed by `invoke autoupdate.disable`.
[Unit]
Description=desbordante-ops: auto-update of {env} every {interval}s

[Timer]
OnActiveSec={FIRST_RUN}
OnUnitInactiveSec={interval}s
AccuracySec=5s

[Install]
WantedBy=timers.target
"""


def unit_paths(unit_dir: Path, env: str) -> tuple[Path, Path]:
    """(service, timer) unit files of ENV."""
    name = unit_name(env)
    return unit_dir / f"{name}.service", unit_dir / f"{name}.timer"


def systemctl(c: Context, *args: str, warn: bool = False) -> bool:
    """`systemctl ARGS`; False when it failed and WARN allows that, Exit otherwise (one line)."""
    command = shlex.join(["systemctl", *args])
    if not warn:
        run(c, command, f"systemctl {' '.join(args)}", missing=NO_SYSTEMD)
        return True
    result = attempt(c, command)
    if result.exited == NOT_FOUND:
        raise Exit(NO_SYSTEMD)
    return bool(result.ok)


def install(c: Context, unit_dir: Path, env: str, service: str, timer: str) -> None:
    """Write both units (0644), reload systemd and start the timer (enabled at boot)."""
    service_path, timer_path = unit_paths(unit_dir, env)
    for path, text in ((service_path, service), (timer_path, timer)):
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
    systemctl(c, "daemon-reload")
    systemctl(c, "enable", "--now", timer_path.name)
    systemctl(c, "restart", timer_path.name)  # a changed interval applies at once


def remove(c: Context, unit_dir: Path, env: str) -> bool:
    """Stop and delete both units; False when none was installed."""
    paths = [path for path in unit_paths(unit_dir, env) if path.exists()]
    if not paths:
        return False
    _, timer_path = unit_paths(unit_dir, env)
    systemctl(c, "disable", "--now", timer_path.name, warn=True)
    systemctl(c, "stop", f"{unit_name(env)}.service", warn=True)  # a cycle running now
    for path in paths:
        path.unlink()
    systemctl(c, "daemon-reload")
    return True


def timer_state(c: Context, env: str) -> dict[str, str]:
    """systemd's view of the timer: SHOWN properties ({} when systemctl cannot tell)."""
    args = ["show", f"{unit_name(env)}.timer", *(f"--property={p}" for p in SHOWN)]
    result = attempt(c, shlex.join(["systemctl", *args]))
    if not result.ok:
        return {}
    pairs = (line.partition("=") for line in str(result.stdout).splitlines())
    return {key: value for key, sep, value in pairs if sep and key in SHOWN}


def installed(unit_dir: Path, env: str) -> dict[str, str]:
    """What the installed units say: the command and the interval ({} when not installed)."""
    service_path, timer_path = unit_paths(unit_dir, env)
    if not service_path.exists() or not timer_path.exists():
        return {}
    found: dict[str, str] = {}
    for line in (service_path.read_text() + timer_path.read_text()).splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ExecStart", "OnUnitInactiveSec"):
            found[key] = value
    return found
