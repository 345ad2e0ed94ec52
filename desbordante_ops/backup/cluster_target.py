"""Backup and restore of a cluster environment (stage, prod) through `kubectl exec`.

Every command runs through the Invoke context; binary data never passes through Invoke: the
shell redirects it between a local file and kubectl (`kubectl exec ... > file`, `kubectl exec
-i ... < file`). Reads of the cluster's state go through the kubernetes client.
- database: `pg_dump -Fc` / the restore pipeline inside the postgres pod, as the pod's own
  user over its unix socket (no password anywhere);
- files: `tar` in a running api pod (backup), or in a helper pod that mounts the uploads claim
  (restore, and backup when no api pod runs). The helper is a Job whose pod is a copy of the
  api pod template (image, config, secret files, mounts, security context) running `sleep`,
  labelled as a migrate pod so the NetworkPolicies let it reach PostgreSQL; it also runs the
  migrations after an older archive. It is deleted at the end (and never outlives
  HELPER_SECONDS). A Job, not a bare Pod: the `desbordante-devops` Role may create Jobs and
  exec into pods, not create pods;
- writers: Deployments api and worker set to 0 replicas (`kubectl patch`: the devops Role may
  patch Deployments, not use their scale subresource) and their pods gone before the restore,
  set back to API_REPLICAS / WORKER_REPLICAS afterwards, waiting for the rollouts.
The kubeconfig needs what the devops Role grants (`invoke access.grant --role devops`).
"""

from __future__ import annotations

import copy
import json
import secrets
import shlex
from pathlib import Path
from typing import Any

from invoke import Context, Exit
from kubernetes import client as k8s

from desbordante_ops.backup import postgres, uploads
from desbordante_ops.backup.archive import DATABASE, UPLOADS
from desbordante_ops.backup.progress import last_line, run_watched
from desbordante_ops.backup.schema import SCHEMA_AT_HEAD
from desbordante_ops.cluster import names
from desbordante_ops.cluster.deploy import manifest_file
from desbordante_ops.cluster.kube import (
    Kube,
    api_errors,
    first_running_pod,
    kubectl,
    read_or_none,
)
from desbordante_ops.cluster.rollout import (
    JOB_NAME_LABEL,
    Clock,
    Deadline,
    SystemClock,
    explain_blocker,
    wait_rollouts,
)
from desbordante_ops.cluster.status import release_of
from desbordante_ops.core.plan import Row, read_or_row, unreadable
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.refs import split_ref

WRITERS = (names.API, names.WORKER)
# Inside the postgres pod: its own user and database (from the ConfigMap), unix socket.
POD_CONNECT = '-U "$POSTGRES_USER" -d "$POSTGRES_DB"'
HELPER_CONTAINER = "restore"
HELPER_PREFIX = "restore-"  # + 6 random hex digits
PLANNED_HELPER = f"{HELPER_PREFIX}XXXXXX"  # its name in a dry run's plan
MIGRATE_ARGV = ["desbordante-service", "migrate"]
HELPER_SECONDS = 3600
# What the helper container keeps of the api container: config, secret files, mounts, security.
HELPER_KEEPS = ("envFrom", "env", "volumeMounts", "securityContext")
DUMP_TIMEOUT_SECONDS = 3600
RESTORE_TIMEOUT_SECONDS = 3600
MIGRATE_TIMEOUT_SECONDS = 600
POD_TIMEOUT_SECONDS = 180
ROLLOUT_TIMEOUT_SECONDS = 600
POLL_SECONDS = 2.0


def unpack_script(mount: str) -> str:
    """bash run in the helper pod: the tar on stdin replaces the uploads (see uploads.py)."""
    excludes = " ".join(f"--exclude={name}" for name in uploads.EXCLUDED)
    keep = " ".join(f"! -name {shlex.quote(name)}" for name in uploads.EXCLUDED)
    staging = uploads.STAGING
    return (
        f"set -euo pipefail; cd {shlex.quote(mount)}; rm -rf {staging}; mkdir {staging}; "
        f"tar -C {staging} {excludes} -xf -; "
        f"find . -mindepth 1 -maxdepth 1 {keep} -exec rm -rf {{}} +; "
        f"find {staging} -mindepth 1 -maxdepth 1 -exec mv -t . {{}} +; rmdir {staging}"
    )


def pack_command(mount: str) -> list[str]:
    """tar of the uploads to standard output (what uploads.pack writes locally)."""
    return [
        "tar",
        "-C",
        mount,
        *(f"--exclude={name}" for name in uploads.EXCLUDED),
        "-cf",
        "-",
        ".",
    ]


def uploads_mount(template: dict[str, Any]) -> str:
    """Where the api container of a pod template (API JSON) mounts the uploads claim."""
    volumes = {
        volume["name"]
        for volume in template["spec"].get("volumes", [])
        if volume.get("persistentVolumeClaim", {}).get("claimName") == names.UPLOADS_PVC
    }
    for container in template["spec"]["containers"]:
        if container["name"] == names.API:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in volumes:
                    return str(mount["mountPath"])
    raise Exit(f"The api Deployment mounts no claim {names.UPLOADS_PVC}; redeploy the stack.")


def helper_job(template: dict[str, Any], name: str) -> dict[str, Any]:
    """The helper Job: the api pod template with one `sleep` container and no init containers."""
    spec = copy.deepcopy(template["spec"])
    api = next(c for c in spec["containers"] if c["name"] == names.API)
    container = {
        "name": HELPER_CONTAINER,
        "image": api["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", str(HELPER_SECONDS)],
        **{key: api[key] for key in HELPER_KEEPS if key in api},
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    }
    spec.pop("initContainers", None)
    spec.update(containers=[container], restartPolicy="Never", terminationGracePeriodSeconds=5)
    labels = {names.NAME_LABEL: names.APP_NAME, names.COMPONENT_LABEL: names.MIGRATE}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {**labels, **names.MANAGED_BY}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": HELPER_SECONDS,
            "ttlSecondsAfterFinished": 60,
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def replicas_patch(replicas: int) -> str:
    return json.dumps({"spec": {"replicas": replicas}})


class ClusterTarget:
    """A cluster environment's database, uploads claim and writers."""

    def __init__(self, c: Context, cfg: EnvConfig, k: Kube, clock: Clock | None = None) -> None:
        self.c = c
        self.cfg = cfg
        self.k = k
        self.env = cfg.name
        self.namespace = cfg.namespace
        self.clock = clock or SystemClock()
        self.helper = ""  # the helper Job
        self.helper_pod = ""

    def describe(self) -> str:
        return f"namespace {self.namespace} on {self.k.host}"

    def kubectl(self, *args: str) -> str:
        return kubectl(self.cfg, "-n", self.namespace, *args)

    def _exec(self, pod: str, container: str, argv: list[str], stdin: bool = False) -> str:
        return self.kubectl("exec", *(["-i"] if stdin else []), pod, "-c", container, "--", *argv)

    def _in_postgres(self, script: str, stdin: bool = False) -> str:
        pod = first_running_pod(self.k.core, self.namespace, names.selector(names.POSTGRES))
        return self._exec(pod, names.POSTGRES, ["bash", "-c", script], stdin)

    def _run(self, command: str, what: str, timeout: float) -> None:
        result = self.c.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        if not result.ok:
            raise Exit(f"{what}: {last_line(result)}")

    # --- backup ---------------------------------------------------------------------------

    def release(self) -> tuple[str, str]:
        tag, image = release_of(self.k.core, self.namespace)
        if tag:
            return tag, image
        image = self._api_template()["spec"]["containers"][0]["image"]
        return split_ref(image)[1] or "latest", f"{image} (no api pod runs)"

    def schema_revision(self) -> str | None:
        command = self._in_postgres(postgres.revision_command(POD_CONNECT))
        result = self.c.run(command, hide=True, warn=True, in_stream=False, timeout=60)
        found, error = postgres.parse_revision(result.ok, result.stdout, result.stderr)
        if error:
            raise Exit(f"psql in the postgres pod: {error}")
        return found

    def dump_database(self, path: Path) -> None:
        command = self._in_postgres(postgres.dump_command(POD_CONNECT))
        command += f" > {shlex.quote(str(path))}"
        result = run_watched(self.c, command, "database dump", DUMP_TIMEOUT_SECONDS, watch=path)
        if not result.ok:
            raise Exit(f"pg_dump in the postgres pod: {last_line(result)}")

    def dump_files(self, path: Path) -> None:
        mount = uploads_mount(self._api_template())
        running = self._running_api_pods()
        pod, container = (running[0], names.API) if running else (self._helper(), HELPER_CONTAINER)
        command = self._exec(pod, container, pack_command(mount))
        command += f" > {shlex.quote(str(path))}"
        result = run_watched(self.c, command, "uploaded files", DUMP_TIMEOUT_SECONDS, watch=path)
        if not result.ok:
            raise Exit(f"tar in pod {pod}: {last_line(result)}")

    def _running_api_pods(self) -> list[str]:
        pods = self.k.core.list_namespaced_pod(
            self.namespace, label_selector=names.selector(names.API)
        ).items
        return [p.metadata.name for p in pods if p.status and p.status.phase == "Running"]

    # --- restore --------------------------------------------------------------------------

    def _writer_pods(self) -> list[str]:
        selector = (
            f"{names.NAME_LABEL}={names.APP_NAME},{names.COMPONENT_LABEL} in ({','.join(WRITERS)})"
        )
        pods = self.k.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [pod.metadata.name for pod in pods]

    def _replicas_command(self, name: str, replicas: int) -> str:
        return self.kubectl(
            "patch", f"deployment/{name}", "--type=merge", "-p", replicas_patch(replicas)
        )

    def _set_replicas(self, name: str, replicas: int) -> None:
        self._run(self._replicas_command(name, replicas), "kubectl patch", 60)

    def stop_writers(self, stopped: list[str]) -> None:
        stopped += WRITERS
        for name in WRITERS:
            self._set_replicas(name, 0)
        left = poll(
            self._writer_pods,
            lambda pods: not pods,
            POD_TIMEOUT_SECONDS,
            POLL_SECONDS,
            sleep=self.clock.sleep,
        )
        if left:
            raise Exit(f"pods still running after {POD_TIMEOUT_SECONDS}s: {', '.join(left)}")

    def restore_database(self, path: Path) -> None:
        command = self._in_postgres(postgres.restore_command(POD_CONNECT), stdin=True)
        command += f" < {shlex.quote(str(path))}"
        result = run_watched(self.c, command, "database restore", RESTORE_TIMEOUT_SECONDS)
        if not result.ok:
            raise Exit(
                f"pg_restore | psql in the postgres pod: {last_line(result)} "
                "(rolled back: the database is unchanged)"
            )

    def restore_files(self, path: Path) -> None:
        mount = uploads_mount(self._api_template())
        command = self._exec(
            self._helper(), HELPER_CONTAINER, ["bash", "-c", unpack_script(mount)], stdin=True
        )
        command += f" < {shlex.quote(str(path))}"
        result = run_watched(self.c, command, "uploaded files", RESTORE_TIMEOUT_SECONDS)
        if not result.ok:
            raise Exit(f"tar in the helper pod: {last_line(result)}")

    def migrate(self) -> None:
        command = self._exec(self._helper(), HELPER_CONTAINER, MIGRATE_ARGV)
        self._run(command, "migrate in the helper pod", MIGRATE_TIMEOUT_SECONDS)

    def _replicas(self) -> dict[str, int]:
        """The replicas of each writer when it runs (the environment's settings)."""
        return {
            names.API: self.cfg.toolkit.API_REPLICAS,
            names.WORKER: self.cfg.toolkit.WORKER_REPLICAS,
        }

    def start_writers(self, names_: list[str]) -> None:
        self.close()
        replicas = self._replicas()
        for name in names_:
            self._set_replicas(name, replicas[name])
        deadline = Deadline.after(ROLLOUT_TIMEOUT_SECONDS, self.clock)
        pending, blocker = wait_rollouts(self.k, self.namespace, deadline)
        if blocker is not None:
            raise Exit(explain_blocker(self.k, self.namespace, blocker))
        if pending:
            late = ", ".join(f"{item.name} {item.ready}/{item.desired}" for item in pending)
            raise Exit(f"not ready within {ROLLOUT_TIMEOUT_SECONDS}s: {late}")

    def close(self) -> None:
        """Delete the helper Job (and with it its pod), if one was made."""
        if self.helper:
            command = self._helper_delete_command(self.helper)
            self.c.run(command, hide=True, warn=True, in_stream=False, timeout=60)
            self.helper = self.helper_pod = ""

    def _helper_delete_command(self, name: str) -> str:
        return self.kubectl(
            "delete", "job", name, "--ignore-not-found", "--wait=false", "--cascade=background"
        )

    # --- the helper pod -------------------------------------------------------------------

    def _api_template(self) -> dict[str, Any]:
        deployment = read_or_none(self.k.apps.read_namespaced_deployment, names.API, self.namespace)
        if deployment is None:
            raise Exit(f"No Deployment api in {self.namespace}; deploy the stack first.")
        template: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(
            deployment.spec.template
        )
        return template

    def _helper(self) -> str:
        """Name of the running pod of the helper Job (made on first use)."""
        if self.helper_pod:
            return self.helper_pod
        name = f"{HELPER_PREFIX}{secrets.token_hex(3)}"
        with manifest_file([helper_job(self._api_template(), name)]) as path:
            self._run(self.kubectl("apply", "-f", path), "creating the helper Job", 60)
        self.helper = name
        selector = f"{JOB_NAME_LABEL}={name}"

        def pods() -> list[Any]:
            return list(
                self.k.core.list_namespaced_pod(self.namespace, label_selector=selector).items
            )

        def started(found: list[Any]) -> bool:
            return any(pod.status and pod.status.phase != "Pending" for pod in found)

        found = poll(pods, started, POD_TIMEOUT_SECONDS, POLL_SECONDS, sleep=self.clock.sleep)
        running = [p.metadata.name for p in found if p.status and p.status.phase == "Running"]
        if not running:
            phase = found[0].status.phase if found and found[0].status else "not created"
            raise Exit(
                f"the helper pod of Job {name} is {phase} after {POD_TIMEOUT_SECONDS}s; "
                f"`kubectl -n {self.namespace} describe job {name}` says why"
            )
        self.helper_pod = running[0]
        return self.helper_pod

    # --- dry runs -------------------------------------------------------------------------

    def _in_postgres_row(self, script: str, redirect: str, stdin: bool = False) -> Row:
        try:
            with api_errors(f"Finding the postgres pod of {self.namespace}"):
                return ("run", self._in_postgres(script, stdin) + redirect)
        except Exit as exc:
            return unreadable("the postgres pod", str(exc.message))

    def _mount(self) -> tuple[str | None, list[Row]]:
        def read() -> str:
            with api_errors(f"Reading Deployment {names.API} of {self.namespace}"):
                return uploads_mount(self._api_template())

        return read_or_row(read, "the uploads claim")

    def _helper_rows(self, mount: str, runs: list[Row]) -> list[Row]:
        """Create the helper Job, RUNS in its pod, delete it."""
        job = f"Job {self.namespace}/{PLANNED_HELPER} (helper pod of the api template; {mount})"
        return [("create", job), *runs, ("run", self._helper_delete_command(PLANNED_HELPER))]

    def _in_helper(self, argv: list[str], redirect: str = "", stdin: bool = False) -> Row:
        return (
            "run",
            self._exec(f"<pod of {PLANNED_HELPER}>", HELPER_CONTAINER, argv, stdin) + redirect,
        )

    def plan_backup(self, staging: Path) -> list[Row]:
        dump = f" > {shlex.quote(str(staging / DATABASE))}"
        rows = [self._in_postgres_row(postgres.dump_command(POD_CONNECT), dump)]
        mount, unknown = self._mount()
        if mount is None:
            return rows + unknown
        tar = f" > {shlex.quote(str(staging / UPLOADS))}"
        try:
            with api_errors(f"Reading the api pods of {self.namespace}"):
                running = self._running_api_pods()
        except Exit as exc:
            return [*rows, unreadable("the api pods", str(exc.message))]
        if running:
            return [*rows, ("run", self._exec(running[0], names.API, pack_command(mount)) + tar)]
        return rows + self._helper_rows(mount, [self._in_helper(pack_command(mount), tar)])

    def plan_restore(self, staging: Path, migration: str) -> list[Row]:
        dump = f" < {shlex.quote(str(staging / DATABASE))}"
        restore = postgres.restore_command(POD_CONNECT)
        rows: list[Row] = [
            *(("run", self._replicas_command(name, 0)) for name in WRITERS),
            ("wait", f"until no api or worker pod is left ({POD_TIMEOUT_SECONDS} s at most)"),
            self._in_postgres_row(restore, dump, stdin=True),
        ]
        mount, unknown = self._mount()
        if mount is None:
            rows += unknown
        else:
            tar = f" < {shlex.quote(str(staging / UPLOADS))}"
            unpack = self._in_helper(["bash", "-c", unpack_script(mount)], tar, stdin=True)
            migrate = self._in_helper(MIGRATE_ARGV)
            schema = (migrate[0], f"{migrate[1]} (schema {migration})")
            rows += self._helper_rows(mount, [unpack, schema if migration else SCHEMA_AT_HEAD])
        replicas = self._replicas()
        return [
            *rows,
            *(("run", self._replicas_command(name, replicas[name])) for name in WRITERS),
            ("wait", f"for the rollouts of api and worker ({ROLLOUT_TIMEOUT_SECONDS} s at most)"),
        ]
