"""The local stack: api, worker and flower under supervisord, against local PostgreSQL/RabbitMQ.

`up` checks the host, provisions role/database/vhost/user, migrates, starts what is missing and
waits for readiness; `down` stops everything (bounded) and supervisord itself; `status` and
`logs` inspect. With `docker=True` each call is delegated to `desbordante_ops.containers`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import psutil
from invoke import Context, Exit

from . import doctor
from .config import BACKEND_DEFAULTS, SECRET_KEYS, EnvConfig
from .console import console, fail, ok, print_table, progress, step, warn
from .localsecrets import ensure_secrets, file_env, read_secret, secret_path, secrets_dir
from .provision import provision_postgres, provision_rabbitmq
from .supervise import (
    SERVICES,
    STOP_WAIT_SECONDS,
    StackPaths,
    Supervisor,
    render_conf,
    supervisord_command,
    write_private,
)

PORT_KEYS = {"api": "APPLICATION_SERVER_PORT", "flower": "FLOWER_PORT"}
FAILED_STATES = ("FATAL", "EXITED", "STOPPED", "UNKNOWN")
LOG_TAIL_LINES = 25
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 3.0


def paths_for(cfg: EnvConfig) -> StackPaths:
    """Run directory of the local stack (LOCAL_RUN_DIR, default .run/local)."""
    return StackPaths(Path(cfg["LOCAL_RUN_DIR"]))


# --- environment of the processes -------------------------------------------------------------


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any backend setting or secret (the stack sets its own)."""
    environ = os.environ if environ is None else environ
    drop = {*BACKEND_DEFAULTS, *SECRET_KEYS, *(f"{key}_FILE" for key in SECRET_KEYS)}
    return {key: value for key, value in environ.items() if key not in drop}


def stack_env(
    cfg: EnvConfig, secret_files: Mapping[str, Path], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Backend variables of the stack: config values, overrides, secrets as *_FILE paths only."""
    env = cfg.backend_env()
    env.update(overrides or {})
    env["UPLOADED_FILES_DIR_PATH"] = cfg["UPLOADED_FILES_DIR_PATH"]
    env.update(file_env(dict(secret_files)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def migrate_command(python: str = sys.executable) -> str:
    """Shell command of the migration (no settings on it: they come from the environment)."""
    return f"{shlex.quote(python)} -m desbordante_service migrate"


def migrate(c: Context, env: Mapping[str, str], python: str = sys.executable) -> None:
    """Run `desbordante-service migrate` with the stack's environment."""
    step("Migrating the database (desbordante-service migrate)")
    result = c.run(
        migrate_command(python),
        env={**clean_environ(), **env},
        replace_env=True,
        in_stream=False,
        hide=True,
        warn=True,
        timeout=300,
    )
    if not result.ok:
        output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
        for line in output[-LOG_TAIL_LINES:]:
            console.print(f"  {line}", style="dim", markup=False)
        last = output[-1] if output else "no output"
        raise Exit(f"migrate failed (exit {result.exited}): {last}")
    ok("Database schema is up to date")


def prepare(c: Context, cfg: EnvConfig) -> dict[str, str]:
    """Secrets, database role/database, broker vhost/user; returns the processes' variables."""
    step("Preparing secrets, database and broker")
    files = ensure_secrets(root=cfg.root)
    provision_postgres(cfg, files["POSTGRES_PASSWORD"])
    broker = provision_rabbitmq(c, cfg, files["RABBITMQ_DEFAULT_PASSWORD"])
    files = {**files, "RABBITMQ_DEFAULT_PASSWORD": broker.password_file}
    Path(cfg["UPLOADED_FILES_DIR_PATH"]).mkdir(parents=True, exist_ok=True)
    return stack_env(cfg, files, broker.overrides)


# --- supervisord ------------------------------------------------------------------------------


def _is_our_supervisord(pid: int, paths: StackPaths) -> bool:
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return any("supervisord" in part for part in cmdline) and str(paths.conf) in cmdline


def start_supervisord(c: Context, paths: StackPaths, timeout: float = 20.0) -> Supervisor:
    """Start supervisord as a daemon and wait until it answers on its socket."""
    sup = Supervisor(paths)
    stale = sup.pid()
    if stale is not None and _is_our_supervisord(stale, paths):
        raise Exit(f"supervisord (pid {stale}) does not answer; run `invoke down`, then retry.")
    paths.socket.unlink(missing_ok=True)
    command = " ".join(
        shlex.quote(part) for part in supervisord_command(sys.executable, paths.conf)
    )
    result = c.run(
        command, env=clean_environ(), replace_env=True, in_stream=False, hide=True, warn=True
    )
    if not result.ok:
        raise Exit(f"supervisord did not start: {(result.stderr or result.stdout).strip()[-300:]}")
    deadline = time.monotonic() + timeout
    while not sup.alive():
        if time.monotonic() > deadline:
            raise Exit(
                f"supervisord did not answer within {timeout:.0f}s; see {paths.supervisord_log}"
            )
        time.sleep(POLL_SECONDS)
    return sup


def is_running(cfg: EnvConfig) -> bool:
    """True when the local stack's supervisord answers."""
    return Supervisor(paths_for(cfg)).alive()


# --- readiness --------------------------------------------------------------------------------


def flower_auth(cfg: EnvConfig) -> tuple[str, str] | None:
    """Flower basic-auth credentials of the local stack (None before the first `up`)."""
    path = secret_path("FLOWER_PASSWORD", root=cfg.root)
    return (cfg["FLOWER_USER"], read_secret(path)) if path.exists() else None


def probe(service: str, cfg: EnvConfig) -> tuple[bool, str]:
    """HTTP health of a service: api → /health/ready, flower → /healthcheck (with auth)."""
    if service == "api":
        url = f"{cfg['API_BASE_URL']}/health/ready"
        auth = None
    elif service == "flower":
        url = f"{cfg['FLOWER_BASE_URL']}{cfg.get('FLOWER_URL_PREFIX', '')}/healthcheck"
        auth = flower_auth(cfg)
    else:
        return True, "running"
    try:
        response = httpx.get(url, auth=auth, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__})"
    if response.status_code == 200:
        return True, "ready" if service == "api" else "answers"
    return False, f"HTTP {response.status_code}"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """Last LINES lines of a log file (empty when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def show_log_tail(paths: StackPaths, service: str) -> None:
    console.print(f"[bold]Last lines of {paths.log(service)}:[/]")
    for line in tail(paths.log(service)) or ["(empty)"]:
        console.print(f"  {line}", markup=False, highlight=False)


def wait_ready(sup: Supervisor, cfg: EnvConfig, timeout: float) -> None:
    """Wait until every service is RUNNING and answers; on failure show its log and Exit."""
    pending, failed = list(SERVICES), {}
    deadline = time.monotonic() + timeout
    with progress() as bar:
        tasks = {name: bar.add_task(f"{name}: starting", total=1) for name in SERVICES}
        while pending and time.monotonic() < deadline:
            infos = sup.processes()
            for name in list(pending):
                state = infos[name]["statename"]
                if state in FAILED_STATES:
                    failed[name] = f"{state.lower()} (exit {infos[name].get('exitstatus')})"
                    pending.remove(name)
                    bar.update(tasks[name], description=f"{name}: {failed[name]}")
                    continue
                ready, detail = probe(name, cfg) if state == "RUNNING" else (False, state.lower())
                bar.update(tasks[name], description=f"{name}: {detail}")
                if ready:
                    bar.update(tasks[name], completed=1)
                    pending.remove(name)
            if pending:
                time.sleep(POLL_SECONDS)
    for name in pending:
        failed[name] = f"not ready within {timeout:.0f}s"
    if failed:
        for name, why in failed.items():
            fail(f"{name}: {why}")
            show_log_tail(sup.paths, name)
        names = ", ".join(failed)
        raise Exit(f"{names} did not become ready; see the log lines above, fix, then `invoke up`.")


# --- up / down / status / logs ----------------------------------------------------------------


def containers_module() -> ModuleType:
    """desbordante_ops.containers (the image-based stack); lazy, as it imports this module."""
    return importlib.import_module("desbordante_ops.containers")


def up(
    c: Context,
    cfg: EnvConfig,
    *,
    docker: bool = False,
    image: str | None = None,
    timeout: float = 120.0,
) -> None:
    """Bring the local stack up; starts only what is not running yet."""
    if docker:
        containers_module().up(c, cfg, image=image or cfg["IMAGE_NAME"], timeout=timeout)
        return
    paths = paths_for(cfg)
    sup = Supervisor(paths)
    step("Checking the host")
    doctor.check_local(cfg, ours=sup.pids)
    env = prepare(c, cfg)
    migrate(c, env)
    paths.prepare()
    conf = render_conf(paths, env, sys.executable, cfg.root)
    if sup.alive():
        if paths.conf.read_text(encoding="utf-8") != conf:
            warn(
                "Settings changed since the stack started; `invoke down && invoke up` applies them"
            )
    else:
        write_private(paths.conf, conf)
        step(f"Starting supervisord ({paths.conf})")
        sup = start_supervisord(c, paths)
    infos = sup.processes()
    for name in SERVICES:
        info = infos[name]
        if info["statename"] in ("RUNNING", "STARTING"):
            ok(f"{name} already {info['statename'].lower()} (pid {info['pid']})")
        else:
            step(f"Starting {name}")
            sup.start(name)
    wait_ready(sup, cfg, timeout)
    summary(cfg, sup)


def summary(cfg: EnvConfig, sup: Supervisor) -> None:
    """Final tables: services and where to find things (never a secret value)."""
    infos = sup.processes()
    print_table(
        "local stack",
        ("service", "state", "pid", "log"),
        [
            (
                name,
                infos[name]["statename"].lower(),
                str(infos[name]["pid"] or "-"),
                str(sup.paths.log(name)),
            )
            for name in SERVICES
        ],
    )
    api, flower = cfg["API_BASE_URL"], cfg["FLOWER_BASE_URL"] + cfg.get("FLOWER_URL_PREFIX", "")
    password_file = secret_path("FLOWER_PASSWORD", root=cfg.root)
    print_table(
        "URLs",
        ("what", "where"),
        [
            ("API", f"{api}/api/v1"),
            ("Swagger UI", f"{api}/docs"),
            ("Flower", flower),
            ("Flower login", f"user {cfg['FLOWER_USER']}, password in {password_file}"),
        ],
    )


def down(c: Context, cfg: EnvConfig, *, docker: bool = False, timeout: float = 30.0) -> None:
    """Stop every service gracefully (bounded), then supervisord; data stays."""
    if docker:
        containers_module().down(c, cfg)
        return
    paths = paths_for(cfg)
    sup = Supervisor(paths)
    pid = sup.pid()
    if not sup.alive():
        if pid is not None and _is_our_supervisord(pid, paths):
            warn(f"supervisord (pid {pid}) does not answer; terminating it and its processes")
            _terminate_tree(pid, timeout)
        else:
            ok("Local stack is not running")
        paths.socket.unlink(missing_ok=True)
        return
    before = sup.processes()
    children = sup.pids() - {pid}
    bound = sum(STOP_WAIT_SECONDS.values())
    step(f"Stopping {', '.join(SERVICES)} (SIGTERM, SIGKILL after at most {bound}s)")
    started = time.monotonic()
    sup.stop_all()
    after = sup.processes()
    rows = []
    for name in SERVICES:
        was = before[name]
        detail = f"was pid {was['pid']}" if was["pid"] else "was not running"
        rows.append((name, was["statename"].lower(), after[name]["statename"].lower(), detail))
    step("Stopping supervisord")
    sup.shutdown()
    if pid is not None:
        _wait_gone(pid, timeout)
    leftovers = [p for p in children if _alive(p)]
    if leftovers:
        warn(f"Killing leftover processes: {', '.join(map(str, leftovers))}")
        for leftover in leftovers:
            _kill(leftover)
    paths.socket.unlink(missing_ok=True)
    print_table("local stack stopped", ("service", "before", "after", "detail"), rows)
    ok(f"Stopped in {time.monotonic() - started:.1f}s; data (database, uploads) is kept")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()


def _wait_gone(pid: int, timeout: float) -> None:
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.TimeoutExpired:
        warn(f"supervisord (pid {pid}) still running after {timeout:.0f}s; killing it")
        _kill(pid)
    except psutil.Error:
        pass


def _terminate_tree(pid: int, timeout: float) -> None:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        _kill(proc.pid)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str
    pid: int | None
    port: str
    health: str


def worker_ping(c: Context, cfg: EnvConfig) -> str:
    """Health of the worker: `desbordante-service worker-ping` with the stack's settings."""
    env = stack_env(cfg, _existing_secret_files(cfg))
    result = c.run(
        f"{shlex.quote(sys.executable)} -m desbordante_service worker-ping",
        env={**clean_environ(), **env},
        replace_env=True,
        in_stream=False,
        hide=True,
        warn=True,
        timeout=30,
    )
    return "answers ping" if result.ok else "no ping answer"


def _existing_secret_files(cfg: EnvConfig) -> dict[str, Path]:
    directory = secrets_dir(root=cfg.root)
    files = {name: directory / name for name in SECRET_KEYS if (directory / name).exists()}
    guest = directory / "RABBITMQ_GUEST_PASSWORD"
    if cfg["RABBITMQ_DEFAULT_USER"] == "guest" and guest.exists():
        files["RABBITMQ_DEFAULT_PASSWORD"] = guest
    return files


def collect_status(c: Context, cfg: EnvConfig) -> list[ServiceStatus]:
    """State, pid, port and health of each service (stopped when supervisord is not up)."""
    sup = Supervisor(paths_for(cfg))
    infos = sup.processes() if sup.alive() else {}
    rows = []
    for name in SERVICES:
        info = infos.get(name, {"statename": "STOPPED", "pid": 0})
        state = info["statename"]
        port = cfg[PORT_KEYS[name]] if name in PORT_KEYS else "-"
        if state != "RUNNING":
            health = "-"
        elif name == "worker":
            health = worker_ping(c, cfg)
        else:
            health = probe(name, cfg)[1]
        rows.append(ServiceStatus(name, state.lower(), info["pid"] or None, port, health))
    return rows


def status(c: Context, cfg: EnvConfig, *, docker: bool = False) -> list[ServiceStatus] | None:
    """Print each service's state, pid, port and health."""
    if docker:
        return containers_module().status(c, cfg)
    rows = collect_status(c, cfg)
    print_table(
        "local stack",
        ("service", "state", "pid", "port", "health"),
        [(r.name, r.state, str(r.pid or "-"), r.port, r.health) for r in rows],
    )
    return rows


def logs(
    c: Context,
    cfg: EnvConfig,
    service: str | None = None,
    *,
    follow: bool = False,
    lines: int = 50,
    docker: bool = False,
) -> None:
    """Show (or follow) the logs of one service or all of them."""
    if service is not None and service not in SERVICES:
        raise Exit(f"Unknown service {service!r}; use one of: {', '.join(SERVICES)}.")
    if docker:
        containers_module().logs(c, cfg, service, follow=follow, lines=lines)
        return
    paths = paths_for(cfg)
    files = [paths.log(name) for name in ([service] if service else SERVICES)]
    existing = [str(path) for path in files if path.exists()]
    if not existing:
        raise Exit("No logs yet; start the stack with `invoke up`.")
    command = ["tail", "-n", str(lines), *(["-F"] if follow else []), *existing]
    c.run(" ".join(shlex.quote(part) for part in command), pty=False, warn=True)
