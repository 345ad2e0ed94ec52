"""`invoke up --docker`: the local stack with api, worker, flower and migrate as containers.

Same environment contract as the process stack (`stack.prepare` provisions PostgreSQL and
RabbitMQ and builds the variables); the differences are only what a container needs:
- host networking (the engine here runs without a bridge), so URLs and ports are unchanged;
- secrets: each `<NAME>_FILE` file is copied (0400, owned by the image's user) into a private
  directory that is mounted read-only at SECRETS_MOUNT, and `<NAME>_FILE` points there;
- the uploads directory is bind-mounted at the same path and owned by the image's user.
`migrate` runs first and must exit 0; then api, worker and flower start and `up` waits until
the API is ready, Flower answers and the worker answers a ping.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container
from invoke import Context, Exit

from desbordante_ops import engine, imagetags, stack
from desbordante_ops.config import EnvConfig
from desbordante_ops.console import console, fail, ok, print_table, progress, step, warn
from desbordante_ops.supervise import SERVICES, STOP_WAIT_SECONDS

ROLES = ("migrate", *SERVICES)
SECRETS_MOUNT = "/run/secrets/desbordante"
STACK_LABEL = "org.desbordante.stack"
ROLE_LABEL = "org.desbordante.role"
MIGRATE_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 25


def container_name(cfg: EnvConfig, role: str) -> str:
    """desbordante-<env>-<role>, e.g. desbordante-local-api."""
    return f"desbordante-{cfg.name}-{role}"


def secrets_copy_dir(cfg: EnvConfig) -> Path:
    """Host directory holding the containers' copies of the secret files (git-ignored .run/)."""
    return Path(cfg["LOCAL_RUN_DIR"]) / "docker-secrets"


# --- image ----------------------------------------------------------------------------------


def resolve_image(client: docker.DockerClient, image: str, root: Path) -> str:
    """A local image reference: IMAGE itself when tagged, else IMAGE:<tag of HEAD>.

    A tagged reference missing locally is pulled (e.g. from a registry on 127.0.0.1).
    """
    repository, tag = _split(image)
    candidates = [image] if tag else [f"{image}:{t}" for t in imagetags.revision(root).tags]
    for ref in candidates:
        with contextlib.suppress(ImageNotFound):
            client.images.get(ref)
            return ref
    if tag:
        step(f"Pulling {image}")
        try:
            client.images.pull(repository, tag=tag)
        except APIError as error:
            raise Exit(f"{image} is not local and cannot be pulled: {error.explanation}") from None
        return image
    raise Exit(f"No local image {candidates[-1]}; run `invoke images.build` (or pass --image).")


def _split(ref: str) -> tuple[str, str | None]:
    name, sep, tag = ref.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (ref, None)


def image_user(client: docker.DockerClient, ref: str) -> tuple[int, int]:
    """Numeric uid and gid of the image's USER (0, 0 when unset or not numeric)."""
    user = client.images.get(ref).attrs["Config"].get("User") or "0"
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        return 0, 0


# --- environment and mounts -----------------------------------------------------------------


def _own(path: Path, uid: int, gid: int, recursive: bool = False) -> None:
    """Give PATH (and, when RECURSIVE, everything below it) to uid:gid."""
    try:
        shutil.chown(path, uid, gid)
        if recursive:
            for below in path.rglob("*"):
                if not below.is_symlink():
                    shutil.chown(below, uid, gid)
    except PermissionError:
        warn(f"Cannot give {path} to uid {uid}; the containers may not be able to use it")


def container_env(
    cfg: EnvConfig, env: Mapping[str, str], uid: int, gid: int
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The containers' environment and volumes from the process stack's environment."""
    copies = secrets_copy_dir(cfg)
    copies.mkdir(mode=0o700, parents=True, exist_ok=True)
    copies.chmod(0o700)
    _own(copies, uid, gid)
    result = dict(env)
    for key, value in env.items():
        if not key.endswith("_FILE"):
            continue
        name = key.removesuffix("_FILE")
        target = copies / name
        target.unlink(missing_ok=True)
        shutil.copyfile(value, target)
        target.chmod(0o400)
        _own(target, uid, gid)
        result[key] = f"{SECRETS_MOUNT}/{name}"
    uploads = Path(env["UPLOADED_FILES_DIR_PATH"])
    uploads.mkdir(parents=True, exist_ok=True)
    _own(uploads, uid, gid, recursive=True)
    volumes = {
        str(copies): {"bind": SECRETS_MOUNT, "mode": "ro"},
        str(uploads): {"bind": str(uploads), "mode": "rw"},
    }
    return result, volumes


# --- containers -----------------------------------------------------------------------------


def find(client: docker.DockerClient, cfg: EnvConfig, role: str) -> Container | None:
    try:
        return client.containers.get(container_name(cfg, role))
    except NotFound:
        return None


def remove(client: docker.DockerClient, cfg: EnvConfig, role: str) -> None:
    container = find(client, cfg, role)
    if container is None:
        return
    with contextlib.suppress(NotFound):
        if container.status in ("running", "restarting"):
            container.stop(timeout=STOP_WAIT_SECONDS.get(role, 10))
        container.remove(force=True)


def run(
    client: docker.DockerClient,
    cfg: EnvConfig,
    ref: str,
    role: str,
    env: Mapping[str, str],
    volumes: Mapping[str, Mapping[str, str]],
) -> Container:
    """Start ROLE of image REF in the background (host network, the image's own user)."""
    restart = (
        {"Name": "no"} if role == "migrate" else {"Name": "on-failure", "MaximumRetryCount": 3}
    )
    return client.containers.run(
        ref,
        [role],
        name=container_name(cfg, role),
        detach=True,
        network_mode="host",
        environment=dict(env),
        volumes={key: dict(value) for key, value in volumes.items()},
        labels={STACK_LABEL: cfg.name, ROLE_LABEL: role},
        restart_policy=restart,
        stop_signal="SIGTERM",
        init=False,
    )


def show_logs(container: Container, lines: int = LOG_TAIL_LINES) -> None:
    console.print(f"[bold]Last lines of {container.name}:[/]")
    text = container.logs(tail=lines).decode("utf-8", errors="replace")
    for line in text.splitlines() or ["(empty)"]:
        console.print(f"  {line}", markup=False, highlight=False)


def migrate(
    client: docker.DockerClient,
    cfg: EnvConfig,
    ref: str,
    env: Mapping[str, str],
    volumes: Mapping[str, Mapping[str, str]],
) -> None:
    """Run the migrate role to completion; Exit with its log when it does not exit 0."""
    step(f"Migrating the database ({container_name(cfg, 'migrate')})")
    remove(client, cfg, "migrate")
    container = run(client, cfg, ref, "migrate", env, volumes)
    try:
        outcome = container.wait(timeout=MIGRATE_TIMEOUT_SECONDS)
    except Exception:  # requests' read timeout: the migration did not finish in time
        show_logs(container)
        container.remove(force=True)
        raise Exit(f"migrate did not finish within {MIGRATE_TIMEOUT_SECONDS}s") from None
    code = int(outcome.get("StatusCode", -1))
    if code != 0:
        show_logs(container)
        container.remove(force=True)
        raise Exit(f"migrate failed (exit {code}); see the log lines above")
    container.remove(force=True)
    ok("Database schema is up to date")


def worker_answers(container: Container) -> bool:
    """`desbordante-service worker-ping` inside the worker container exits 0."""
    try:
        exit_code, _ = container.exec_run(["desbordante-service", "worker-ping"], demux=False)
    except APIError:
        return False
    return exit_code == 0


def health(client: docker.DockerClient, cfg: EnvConfig, role: str) -> tuple[bool, str]:
    """(ready, detail) of one role's container."""
    container = find(client, cfg, role)
    if container is None:
        return False, "missing"
    if container.status != "running":
        return False, container.status
    if role == "worker":
        return (True, "answers ping") if worker_answers(container) else (False, "no ping answer")
    return stack.probe(role, cfg)


def wait_ready(client: docker.DockerClient, cfg: EnvConfig, timeout: float) -> None:
    """Wait until api, worker and flower are ready; on failure show their logs and Exit."""
    pending, failed = list(SERVICES), {}
    deadline = time.monotonic() + timeout
    with progress() as bar:
        tasks = {name: bar.add_task(f"{name}: starting", total=1) for name in SERVICES}
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                ready, detail = health(client, cfg, name)
                bar.update(tasks[name], description=f"{name}: {detail}")
                if ready:
                    bar.update(tasks[name], completed=1)
                    pending.remove(name)
                elif detail in ("exited", "dead", "missing"):
                    failed[name] = detail
                    pending.remove(name)
            if pending:
                time.sleep(POLL_SECONDS)
    failed.update({name: f"not ready within {timeout:.0f}s" for name in pending})
    if failed:
        for name, why in failed.items():
            fail(f"{name}: {why}")
            container = find(client, cfg, name)
            if container is not None:
                show_logs(container)
        raise Exit(f"{', '.join(failed)} did not become ready; see the log lines above.")


def up(c: Context, cfg: EnvConfig, image: str, timeout: float = 120.0) -> None:
    """Bring the containers up (migrate first), recreating any from an earlier `up`."""
    if stack.is_running(cfg):
        raise Exit("The process stack is running on the same ports; `invoke down` first.")
    client = engine.ensure_engine()
    ref = resolve_image(client, image, cfg.root)
    uid, gid = image_user(client, ref)
    env, volumes = container_env(cfg, stack.prepare(c, cfg), uid, gid)
    migrate(client, cfg, ref, env, volumes)
    for role in SERVICES:
        remove(client, cfg, role)
        step(f"Starting {container_name(cfg, role)} ({ref})")
        run(client, cfg, ref, role, env, volumes)
    wait_ready(client, cfg, timeout)
    status(c, cfg)


def down(c: Context, cfg: EnvConfig) -> None:
    """Stop and remove the containers (bounded graceful stop); data stays."""
    client = engine.ensure_engine()
    found = [role for role in ROLES if find(client, cfg, role) is not None]
    if not found:
        ok("No stack containers are running")
    else:
        step(f"Stopping {', '.join(container_name(cfg, role) for role in found)}")
        for role in found:
            remove(client, cfg, role)
        ok("Containers stopped and removed; data (database, uploads) is kept")
    shutil.rmtree(secrets_copy_dir(cfg), ignore_errors=True)


def _row(client: docker.DockerClient, cfg: EnvConfig, role: str) -> stack.ServiceStatus:
    container = find(client, cfg, role)
    if container is None:
        return stack.ServiceStatus(role, "missing", None, "-", "-")
    state: Mapping[str, Any] = container.attrs.get("State", {})
    port = cfg[stack.PORT_KEYS[role]] if role in stack.PORT_KEYS else "-"
    detail = health(client, cfg, role)[1] if container.status == "running" else "-"
    return stack.ServiceStatus(role, container.status, state.get("Pid") or None, port, detail)


def status(c: Context, cfg: EnvConfig) -> list[stack.ServiceStatus]:
    """Print and return each container's state, host pid, port and health."""
    client = engine.ensure_engine()
    rows = [_row(client, cfg, role) for role in SERVICES]
    images = {role: _image_of(client, cfg, role) for role in SERVICES}
    print_table(
        "local stack (containers)",
        ("service", "state", "pid", "port", "health", "image"),
        [(r.name, r.state, str(r.pid or "-"), r.port, r.health, images[r.name]) for r in rows],
    )
    return rows


def _image_of(client: docker.DockerClient, cfg: EnvConfig, role: str) -> str:
    container = find(client, cfg, role)
    if container is None:
        return "-"
    return str(container.attrs.get("Config", {}).get("Image", "-")).rsplit("/", 1)[-1]


def logs(
    c: Context,
    cfg: EnvConfig,
    service: str | None = None,
    *,
    follow: bool = False,
    lines: int = 50,
) -> None:
    """Print (or follow, for one service) the containers' logs."""
    client = engine.ensure_engine()
    for role in [service] if service else list(SERVICES):
        container = find(client, cfg, role)
        if container is None:
            warn(f"{container_name(cfg, role)} does not exist")
            continue
        console.rule(container.name)
        if follow and service:
            for chunk in container.logs(stream=True, follow=True, tail=lines):
                console.out(chunk.decode("utf-8", errors="replace"), end="", highlight=False)
        else:
            text = container.logs(tail=lines).decode("utf-8", errors="replace")
            console.out(text, end="", highlight=False)
