"""`invoke up --docker`: the local stack with migrate, api, worker and flower as containers.

Same environment contract as the process stack (provisioned PostgreSQL and RabbitMQ, secrets
as `<NAME>_FILE`); the differences are what a container needs:
- host networking: the containers use the host's PostgreSQL and RabbitMQ on loopback, and
  the URLs and ports stay those of the process stack (Linux engines);
- secrets: each `<NAME>_FILE` file is copied (0400, owned by the image's user) into a private
  directory mounted read-only at SECRETS_MOUNT, and `<NAME>_FILE` points there;
- the uploads directory is bind-mounted at the same path and owned by the image's user.
`migrate` runs first and must exit 0; then api, worker and flower start.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container
from invoke import Context, Exit
from requests.exceptions import RequestException

from desbordante_ops.core.console import console, ok, step, warn
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image import engine, tags
from desbordante_ops.image.refs import split_ref
from desbordante_ops.local.health import Health, ServiceStatus, port_of, probe
from desbordante_ops.local.processes import ProcessStack
from desbordante_ops.local.stack import LOG_TAIL_LINES, LocalStack
from desbordante_ops.local.supervise import SERVICES, STOP_WAIT_SECONDS

ROLES = ("migrate", *SERVICES)
SECRETS_MOUNT = "/run/secrets/desbordante"
STACK_LABEL = "org.desbordante.stack"
ROLE_LABEL = "org.desbordante.role"
MIGRATE_TIMEOUT_SECONDS = 300
GONE = ("exited", "dead", "missing")


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


class ContainerStack(LocalStack):
    """The stack as containers of the built image (the image's own user, host network)."""

    kind = "containers"
    title = "local stack (containers)"

    def __init__(self, c: Context, cfg: EnvConfig, image: str | None = None) -> None:
        super().__init__(c, cfg)
        self.image = image or cfg.toolkit.IMAGE_NAME
        self._client: docker.DockerClient | None = None
        self._ref: str | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine.connect()
        return self._client

    def name(self, role: str) -> str:
        """desbordante-<env>-<role>, e.g. desbordante-local-api."""
        return f"desbordante-{self.cfg.name}-{role}"

    @property
    def secrets_copy_dir(self) -> Path:
        """Host directory holding the containers' copies of the secret files (.run/, ignored)."""
        return self.cfg.run_dir / "docker-secrets"

    # --- image ----------------------------------------------------------------------------

    def resolve_image(self) -> str:
        """A local image reference: IMAGE itself when tagged, else IMAGE:<tag of HEAD>.

        A tagged reference missing locally is pulled (e.g. from a registry on 127.0.0.1).
        """
        repository, tag = split_ref(self.image)
        candidates = (
            [self.image]
            if tag
            else [f"{self.image}:{t}" for t in tags.revision(self.c, self.cfg.root).tags]
        )
        for ref in candidates:
            with contextlib.suppress(ImageNotFound):
                self.client.images.get(ref)
                return ref
        if not tag:
            raise Exit(
                f"No local image {candidates[-1]}; run `invoke images.build` (or pass --image)."
            )
        step(f"Pulling {self.image}")
        try:
            self.client.images.pull(repository, tag=tag)
        except APIError as error:
            raise Exit(
                f"{self.image} is not local and cannot be pulled: {error.explanation}"
            ) from None
        return self.image

    def image_user(self, ref: str) -> tuple[int, int]:
        """Numeric uid and gid of the image's USER (0, 0 when unset or not numeric)."""
        user = self.client.images.get(ref).attrs["Config"].get("User") or "0"
        uid, _, gid = user.partition(":")
        try:
            return int(uid), int(gid or uid)
        except ValueError:
            return 0, 0

    # --- environment and mounts -----------------------------------------------------------

    def container_env(
        self, env: Mapping[str, str], uid: int, gid: int
    ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """The containers' environment and volumes from the process stack's environment."""
        copies = self.secrets_copy_dir
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

    # --- containers -----------------------------------------------------------------------

    def find(self, role: str) -> Container | None:
        try:
            return self.client.containers.get(self.name(role))
        except NotFound:
            return None

    def remove(self, role: str) -> None:
        container = self.find(role)
        if container is None:
            return
        with contextlib.suppress(NotFound):
            if container.status in ("running", "restarting"):
                container.stop(timeout=STOP_WAIT_SECONDS.get(role, 10))
            container.remove(force=True)

    def run(
        self, role: str, env: Mapping[str, str], volumes: Mapping[str, dict[str, str]]
    ) -> Container:
        """Start ROLE of the image in the background (host network, the image's own user)."""
        assert self._ref is not None
        restart: Any = (
            {"Name": "no"} if role == "migrate" else {"Name": "on-failure", "MaximumRetryCount": 3}
        )
        return self.client.containers.run(
            self._ref,
            [role],
            name=self.name(role),
            detach=True,
            network_mode="host",
            environment=dict(env),
            volumes=dict(volumes),
            labels={STACK_LABEL: self.cfg.name, ROLE_LABEL: role},
            restart_policy=restart,
            stop_signal="SIGTERM",
            init=False,
        )

    # --- LocalStack -----------------------------------------------------------------------

    def is_running(self) -> bool:
        return any(self.find(role) is not None for role in SERVICES)

    def check_host(self) -> None:
        if ProcessStack(self.c, self.cfg).is_running():
            raise Exit("The process stack is running on the same ports; `invoke down` first.")
        self._ref = self.resolve_image()

    def _prepared(self, env: dict[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        assert self._ref is not None
        uid, gid = self.image_user(self._ref)
        return self.container_env(env, uid, gid)

    def migrate(self, env: dict[str, str]) -> None:
        step(f"Migrating the database ({self.name('migrate')})")
        self.remove("migrate")
        container = self.run("migrate", *self._prepared(env))
        try:
            code = int(container.wait(timeout=MIGRATE_TIMEOUT_SECONDS).get("StatusCode", -1))
            why = f"failed (exit {code})"
        except RequestException:  # the migration did not finish in time
            code, why = -1, f"did not finish within {MIGRATE_TIMEOUT_SECONDS}s"
        if code != 0:
            self.show_log_tail("migrate")
        container.remove(force=True)
        if code != 0:
            raise Exit(f"migrate {why}; see the log lines above")
        ok("Database schema is up to date")

    def start(self, env: dict[str, str]) -> None:
        env_, volumes = self._prepared(env)
        for role in SERVICES:
            self.remove(role)
            step(f"Starting {self.name(role)} ({self._ref})")
            self.run(role, env_, volumes)

    def health(self, service: str) -> Health:
        container = self.find(service)
        if container is None or container.status != "running":
            state = "missing" if container is None else container.status
            return Health(False, state, failed=state in GONE)
        if service != "worker":
            return probe(service, self.cfg)
        try:
            code, _ = container.exec_run(["desbordante-service", "worker-ping"], demux=False)
        except APIError:
            code = -1
        return Health(True, "answers ping") if code == 0 else Health(False, "no ping answer")

    def log_tail(self, service: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        container = self.find(service)
        if container is None:
            return []
        return container.logs(tail=lines).decode("utf-8", errors="replace").splitlines()

    def rows(self) -> list[ServiceStatus]:
        rows = []
        for role in SERVICES:
            container = self.find(role)
            if container is None:
                rows.append(ServiceStatus(role, "missing", None, "-", "-", "-"))
                continue
            pid = container.attrs.get("State", {}).get("Pid") or None
            health = self.health(role).detail if container.status == "running" else "-"
            image = str(container.attrs.get("Config", {}).get("Image", "-")).rsplit("/", 1)[-1]
            rows.append(
                ServiceStatus(role, container.status, pid, port_of(self.cfg, role), health, image)
            )
        return rows

    def down(self, timeout: float) -> None:
        found = [role for role in ROLES if self.find(role) is not None]
        if not found:
            ok("No stack containers are running")
        else:
            step(f"Stopping {', '.join(self.name(role) for role in found)}")
            for role in found:
                self.remove(role)
            ok("Containers stopped and removed; data (database, uploads) is kept")
        shutil.rmtree(self.secrets_copy_dir, ignore_errors=True)

    def logs(self, services: Sequence[str], follow: bool, lines: int) -> None:
        for role in services:
            container = self.find(role)
            if container is None:
                warn(f"{self.name(role)} does not exist")
                continue
            console.rule(self.name(role))
            if follow and len(services) == 1:
                for chunk in container.logs(stream=True, follow=True, tail=lines):
                    console.out(chunk.decode("utf-8", errors="replace"), end="", highlight=False)
            else:
                text = container.logs(tail=lines).decode("utf-8", errors="replace")
                console.out(text, end="", highlight=False)
