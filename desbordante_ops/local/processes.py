"""The local stack as processes under supervisord (the default of `invoke up`).

Programs are not autostarted: `up` starts each missing one over XML-RPC, so running it twice
starts only what is missing. `down` stops every program (bounded: SIGTERM, then SIGKILL after
its stopwaitsecs), then supervisord itself, and kills anything left of its process tree.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from invoke import Context, Exit

from desbordante_ops.core.checks import check_and_report
from desbordante_ops.core.console import console, ok, print_table, step, warn
from desbordante_ops.core.files import write_private
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt, run
from desbordante_ops.local.environ import clean_environ, existing_env, run_service_command
from desbordante_ops.local.health import Health, ServiceStatus, port_of, probe
from desbordante_ops.local.preflight import local_checks
from desbordante_ops.local.stack import LOG_TAIL_LINES, LocalStack
from desbordante_ops.local.supervise import (
    SERVICES,
    STOP_WAIT_SECONDS,
    StackPaths,
    Supervisor,
    programs,
    render_conf,
    supervisord_command,
)

FAILED_STATES = ("FATAL", "EXITED", "STOPPED", "UNKNOWN")
SUPERVISORD_START_SECONDS = 20.0


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """Last LINES lines of a log file (empty when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def _terminate(procs: list[psutil.Process], timeout: float) -> None:
    """SIGTERM PROCS, SIGKILL what is left after TIMEOUT."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        _kill(proc.pid)


class ProcessStack(LocalStack):
    """api, worker and flower as processes of this Python environment under supervisord."""

    kind = "processes"
    title = "local stack"

    def __init__(self, c: Context, cfg: EnvConfig) -> None:
        super().__init__(c, cfg)
        self.paths = StackPaths(cfg.run_dir)
        self.sup = Supervisor(self.paths)

    def is_running(self) -> bool:
        return self.sup.alive()

    def _is_our_supervisord(self, pid: int) -> bool:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return any("supervisord" in part for part in cmdline) and str(self.paths.conf) in cmdline

    def check_host(self) -> None:
        check_and_report(local_checks(self.c, self.cfg, ours=self.sup.pids), "doctor (local stack)")

    def migrate(self, env: dict[str, str]) -> None:
        step("Migrating the database (desbordante-service migrate)")
        done, output = run_service_command(self.c, env, "migrate", timeout=300)
        if not done:
            for line in output[-LOG_TAIL_LINES:]:
                console.print(f"  {line}", style="dim", markup=False)
            raise Exit(f"migrate failed: {output[-1] if output else 'no output'}")
        ok("Database schema is up to date")

    def _start_supervisord(self) -> None:
        stale = self.sup.pid()
        if stale is not None and self._is_our_supervisord(stale):
            raise Exit(f"supervisord (pid {stale}) does not answer; run `invoke down`, then retry.")
        self.paths.socket.unlink(missing_ok=True)
        run(
            self.c,
            shlex.join(supervisord_command(sys.executable, self.paths.conf)),
            "Starting supervisord",
            env=clean_environ(),
            replace_env=True,
        )
        if not poll(self.sup.alive, bool, SUPERVISORD_START_SECONDS):
            raise Exit(
                f"supervisord did not answer within {SUPERVISORD_START_SECONDS:.0f}s; "
                f"see {self.paths.supervisord_log}"
            )

    def start(self, env: dict[str, str]) -> None:
        self.paths.prepare()
        conf = render_conf(self.paths, env, sys.executable, self.cfg.root)
        if self.sup.alive():
            if self.paths.conf.read_text(encoding="utf-8") != conf:
                warn("Settings changed since the stack started; `invoke down && invoke up`")
        else:
            write_private(self.paths.conf, conf)
            step(f"Starting supervisord ({self.paths.conf})")
            self._start_supervisord()
        infos = self.sup.processes()
        for name in (name for name in programs(env) if name in infos):  # new ones: after down
            info = infos[name]
            if info["statename"] in ("RUNNING", "STARTING"):
                ok(f"{name} already {info['statename'].lower()} (pid {info['pid']})")
            else:
                step(f"Starting {name}")
                self.sup.start(name)

    def _worker_ping(self) -> Health:
        done, _ = run_service_command(self.c, existing_env(self.cfg), "worker-ping", timeout=30)
        return Health(True, "answers ping") if done else Health(False, "no ping answer")

    def health(self, service: str) -> Health:
        info = self.sup.processes()[service]
        state = info["statename"]
        if state in FAILED_STATES:
            return Health(False, f"{state.lower()} (exit {info.get('exitstatus')})", failed=True)
        if state != "RUNNING":
            return Health(False, state.lower())
        return self._worker_ping() if service == "worker" else probe(service, self.cfg)

    def log_tail(self, service: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        return tail(self.paths.log(service), lines)

    def rows(self) -> list[ServiceStatus]:
        infos = self.sup.processes() if self.sup.alive() else {}
        rows = []
        for name in SERVICES:
            info = infos.get(name, {"statename": "STOPPED", "pid": 0})
            state = info["statename"]
            health = self.health(name).detail if state == "RUNNING" else "-"
            rows.append(
                ServiceStatus(
                    name, state.lower(), info["pid"] or None, port_of(self.cfg, name), health
                )
            )
        return rows

    def down(self, timeout: float) -> None:
        pid = self.sup.pid()
        if not self.sup.alive():
            if pid is not None and self._is_our_supervisord(pid):
                warn(f"supervisord (pid {pid}) does not answer; terminating it and its processes")
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    _terminate([root, *root.children(recursive=True)], timeout)
            else:
                ok("Local stack is not running")
            self.paths.socket.unlink(missing_ok=True)
            return
        before = self.sup.processes()
        children = self.sup.pids() - {pid}
        bound = sum(STOP_WAIT_SECONDS.values())
        step(f"Stopping {', '.join(SERVICES)} (SIGTERM, SIGKILL after at most {bound}s)")
        started = time.monotonic()
        self.sup.stop_all()
        after = self.sup.processes()
        step("Stopping supervisord")
        self.sup.shutdown()
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                _terminate_after(psutil.Process(pid), timeout)
        leftovers = [p for p in children if _alive(p)]
        if leftovers:
            warn(f"Killing leftover processes: {', '.join(map(str, leftovers))}")
            for leftover in leftovers:
                _kill(leftover)
        self.paths.socket.unlink(missing_ok=True)
        rows = []
        for name in SERVICES:
            was = before[name]
            detail = f"was pid {was['pid']}" if was["pid"] else "was not running"
            rows.append((name, was["statename"].lower(), after[name]["statename"].lower(), detail))
        print_table("local stack stopped", ("service", "before", "after", "detail"), rows)
        ok(f"Stopped in {time.monotonic() - started:.1f}s; data (database, uploads) is kept")

    def logs(self, services: Sequence[str], follow: bool, lines: int) -> None:
        files = [self.paths.log(name) for name in services]
        existing = [str(path) for path in files if path.exists()]
        if not existing:
            raise Exit("No logs yet; start the stack with `invoke up`.")
        command = ["tail", "-n", str(lines), *(["-F"] if follow else []), *existing]
        attempt(self.c, shlex.join(command), hide=False)


def _terminate_after(proc: psutil.Process, timeout: float) -> None:
    """Wait TIMEOUT for PROC to exit by itself, then kill it."""
    try:
        proc.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        warn(f"supervisord (pid {proc.pid}) still running after {timeout:.0f}s; killing it")
        _kill(proc.pid)
