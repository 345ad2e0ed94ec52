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
- verification: a scratch database created, restored into (the dump on stdin), counted and
  dropped in the postgres pod by its own user, next to the environment's database.
The pods a run uses are read while its plan is built (what cannot be read is an `unknown`
row); the helper Job is named when it is created, and its pod by the Job controller: their
rows show `restore-XXXXXX` and `<pod of restore-XXXXXX>`.
The kubeconfig needs what the devops Role grants (`invoke access.grant --role devops`).
"""

from __future__ import annotations

import copy
import json
import secrets
import shlex
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from invoke import Context, Exit, Result
from kubernetes import client as k8s

from desbordante_ops.backup import postgres, uploads
from desbordante_ops.backup.progress import run_watched
from desbordante_ops.backup.protocol import (
    Facts,
    RestoreSteps,
    Scratch,
    ScratchSteps,
    Staging,
    dump_counts,
    dumped,
    packed,
)
from desbordante_ops.backup.schema import SCHEMA_AT_HEAD, SchemaPlan
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, kubectl
from desbordante_ops.cluster.kube.errors import api_errors
from desbordante_ops.cluster.kube.objects import first_running_pod, read_or_none
from desbordante_ops.cluster.release.rollout import (
    JOB_NAME_LABEL,
    Clock,
    Deadline,
    SystemClock,
    explain_blocker,
    wait_rollouts,
)
from desbordante_ops.cluster.status import release_of
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Step, unknown
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt, last_line
from desbordante_ops.image.refs import split_ref

WRITERS = (names.API, names.WORKER)
# Inside the postgres pod: its own user and database (from the ConfigMap), unix socket.
POD_CONNECT = '-U "$POSTGRES_USER" -d "$POSTGRES_DB"'
# Where the pod's user creates and drops a scratch database: the maintenance database.
POD_ADMIN_CONNECT = '-U "$POSTGRES_USER" -d postgres'
HELPER_CONTAINER = "restore"
HELPER_PREFIX = "restore-"  # + 6 random hex digits
PLANNED_HELPER = f"{HELPER_PREFIX}XXXXXX"  # its name in a plan's rows
PLANNED_HELPER_POD = f"<pod of {PLANNED_HELPER}>"
MIGRATE_ARGV = ["desbordante-service", "migrate"]
HELPER_SECONDS = 3600
# What the helper container keeps of the api container: config, secret files, mounts, security.
HELPER_KEEPS = ("envFrom", "env", "volumeMounts", "securityContext")
DUMP_TIMEOUT_SECONDS = 3600
RESTORE_TIMEOUT_SECONDS = 3600
COUNT_TIMEOUT_SECONDS = 3600
SQL_TIMEOUT_SECONDS = 120
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


@contextmanager
def manifest_file(docs: list[dict[str, Any]]) -> Iterator[str]:
    """DOCS in a temporary YAML file for `kubectl apply -f` (never a secret among them)."""
    with tempfile.NamedTemporaryFile("w", prefix="desbordante-", suffix=".yaml") as handle:
        yaml.safe_dump_all(docs, handle, sort_keys=False)
        handle.flush()
        yield handle.name


def replicas_patch(replicas: int) -> str:
    return json.dumps({"spec": {"replicas": replicas}})


def pod_connect(dbname: str) -> str:
    """The pod's own user on database DBNAME (unix socket)."""
    return f'-U "$POSTGRES_USER" -d {shlex.quote(dbname)}'


T = TypeVar("T")


class ClusterTarget:
    """A cluster environment's database, uploads claim and writers."""

    def __init__(self, c: Context, cfg: EnvConfig, k: Kube, clock: Clock | None = None) -> None:
        self.c = c
        self.cfg = cfg
        self.k = k
        self.env = cfg.name
        self.namespace = cfg.namespace
        self.database = cfg.backend.POSTGRES_DB or ""
        self.clock = clock or SystemClock()
        self.helper = ""  # the helper Job
        self.helper_pod = ""
        self._postgres = ""
        self._told: set[str] = set()

    def describe(self) -> str:
        return f"namespace {self.namespace} on {self.k.host}"

    def kubectl(self, *args: str) -> str:
        return kubectl(self.cfg, "-n", self.namespace, *args)

    def _exec(self, pod: str, container: str, argv: list[str], stdin: bool = False) -> str:
        return self.kubectl("exec", *(["-i"] if stdin else []), pod, "-c", container, "--", *argv)

    def _read(self, what: str, read: Callable[[], T]) -> tuple[T | None, list[Step]]:
        """READ() for a plan, or None and the `unknown` row saying why (only the first time
        WHAT cannot be read: the plan stops there anyway)."""
        try:
            with api_errors(f"Reading {what} of {self.namespace}"):
                return read(), []
        except Exit as exc:
            if what in self._told:
                return None, []
            self._told.add(what)
            return None, [unknown(what, str(exc.message))]

    def _postgres_pod(self) -> str:
        if not self._postgres:
            selector = names.selector(names.POSTGRES)
            self._postgres = first_running_pod(self.k.core, self.namespace, selector)
        return self._postgres

    def _in_postgres(self, script: str, stdin: bool = False) -> str:
        return self._exec(self._postgres_pod(), names.POSTGRES, ["bash", "-c", script], stdin)

    def _postgres_steps(self, build: Callable[[], list[Step]]) -> list[Step]:
        """BUILD()'s steps in the postgres pod, or the row saying it cannot be found."""
        pod, missing = self._read("the postgres pod", self._postgres_pod)
        return missing if pod is None else build()

    def _run(self, command: str, what: str, timeout: float) -> Result:
        result = attempt(self.c, command, timeout=timeout)
        if not result.ok:
            raise Exit(f"{what}: {last_line(result)}")
        return result

    def _watched(
        self, command: str, label: str, what: str, timeout: float, watch: Path | None = None
    ) -> Result:
        result = run_watched(self.c, command, label, timeout, watch=watch)
        if not result.ok:
            raise Exit(f"{what}: {last_line(result)}")
        return result

    # --- backup ---------------------------------------------------------------------------

    def release(self) -> tuple[str, str]:
        with api_errors(f"Reading the api pods of {self.namespace}"):
            tag, image = release_of(self.k.core, self.namespace)
            if tag:
                return tag, image
            image = self._api_template()["spec"]["containers"][0]["image"]
        return split_ref(image)[1] or "latest", f"{image} (no api pod runs)"

    def _revision(self, command: str) -> str | None:
        result = attempt(self.c, command, timeout=60)
        found, error = postgres.parse_revision(result.ok, result.stdout, result.stderr)
        if error:
            raise Exit(f"psql in the postgres pod: {error}")
        return found

    def facts_step(self, keep: Callable[[Facts], None]) -> list[Step]:
        def build() -> list[Step]:
            command = self._in_postgres(postgres.revision_command(POD_CONNECT))

            def run() -> None:
                release, image = self.release()
                keep(Facts(release, image, self._revision(command)))

            return [
                Step("read", f"the release the api runs and the schema revision: {command}", run)
            ]

        return self._postgres_steps(build)

    def backup_steps(self, staging: Staging) -> list[Step]:
        def dump_step() -> list[Step]:
            path = staging.database
            command = self._in_postgres(postgres.dump_command(POD_CONNECT))
            command += f" > {shlex.quote(str(path))}"

            def run() -> None:
                what = "pg_dump in the postgres pod"
                self._watched(command, "database dump", what, DUMP_TIMEOUT_SECONDS, path)
                dumped(path)

            return [Step("run", command, run)]

        steps = self._postgres_steps(dump_step)
        mount, missing = self._read("the uploads claim", self._mount)
        if mount is None:
            return steps + missing
        running, missing = self._read("the api pods", self._running_api_pods)
        if running is None:
            return steps + missing
        path = staging.uploads
        tar = f" > {shlex.quote(str(path))}"
        if running:
            pod = running[0]
            command = self._exec(pod, names.API, pack_command(mount)) + tar

            def pack() -> None:
                what = f"tar in pod {pod}"
                self._watched(command, "uploaded files", what, DUMP_TIMEOUT_SECONDS, path)
                packed(path)

            return [*steps, Step("run", command, pack)]
        in_helper = self._in_helper(
            pack_command(mount),
            redirect=tar,
            label="uploaded files",
            what="tar in the helper pod",
            timeout=DUMP_TIMEOUT_SECONDS,
            watch=path,
            done=lambda: packed(path),
        )
        return [*steps, self._helper_step(mount), in_helper, self._helper_delete_step()]

    def count_step(self, dump: Path, keep: Callable[[dict[str, int]], None]) -> list[Step]:
        def build() -> list[Step]:
            command = self._in_postgres(postgres.count_command(), stdin=True)
            command += f" < {shlex.quote(str(dump))}"

            def run() -> None:
                what = "counting the rows of the dump in the postgres pod"
                result = self._watched(command, "counting rows", what, COUNT_TIMEOUT_SECONDS)
                keep(dump_counts(result.stdout))

            return [Step("run", command, run)]

        return self._postgres_steps(build)

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

    def _wait_writers_gone(self) -> None:
        left = poll(
            self._writer_pods,
            lambda pods: not pods,
            POD_TIMEOUT_SECONDS,
            POLL_SECONDS,
            sleep=self.clock.sleep,
        )
        if left:
            raise Exit(f"pods still running after {POD_TIMEOUT_SECONDS}s: {', '.join(left)}")

    def restore_steps(
        self, staging: Staging, schema: SchemaPlan, stopped: list[str]
    ) -> RestoreSteps:
        def stopper(name: str) -> Callable[[], None]:
            def stop() -> None:
                stopped.extend(w for w in WRITERS if w not in stopped)  # all, from the first
                self._set_replicas(name, 0)

            return stop

        def database() -> list[Step]:
            command = self._in_postgres(postgres.restore_command(POD_CONNECT), stdin=True)
            command += f" < {shlex.quote(str(staging.database))}"

            def run() -> None:
                result = run_watched(self.c, command, "database restore", RESTORE_TIMEOUT_SECONDS)
                if not result.ok:
                    raise Exit(
                        f"pg_restore | psql in the postgres pod: {last_line(result)} "
                        "(rolled back: the database is unchanged)"
                    )

            return [Step("run", command, run)]

        mount, missing = self._read("the uploads claim", self._mount)
        if mount is None:
            files = missing
        else:
            unpack = self._in_helper(
                ["bash", "-c", unpack_script(mount)],
                redirect=f" < {shlex.quote(str(staging.uploads))}",
                stdin=True,
                label="uploaded files",
                what="tar in the helper pod",
                timeout=RESTORE_TIMEOUT_SECONDS,
            )
            files = [self._helper_step(mount), unpack]
        migrate = self._in_helper(
            MIGRATE_ARGV,
            label="migrations",
            what="migrate in the helper pod",
            timeout=MIGRATE_TIMEOUT_SECONDS,
            note=f" (schema {schema.migration})",
        )
        replicas = self._replicas()
        rollouts = f"for the rollouts of api and worker ({ROLLOUT_TIMEOUT_SECONDS} s at most)"
        gone = f"until no api or worker pod is left ({POD_TIMEOUT_SECONDS} s at most)"
        return RestoreSteps(
            stop=[
                *(Step("run", self._replicas_command(n, 0), stopper(n)) for n in WRITERS),
                Step("wait", gone, self._wait_writers_gone),
            ],
            database=self._postgres_steps(database),
            files=files,
            migrate=[migrate] if schema.migrate else [SCHEMA_AT_HEAD],
            start=[
                self._helper_delete_step(),
                *(
                    Step("run", self._replicas_command(n, replicas[n]), self._starter(n))
                    for n in WRITERS
                ),
                Step("wait", rollouts, self._wait_rollouts),
            ],
        )

    def _replicas(self) -> dict[str, int]:
        """The replicas of each writer when it runs (the environment's settings)."""
        return {
            names.API: self.cfg.toolkit.API_REPLICAS,
            names.WORKER: self.cfg.toolkit.WORKER_REPLICAS,
        }

    def _starter(self, name: str) -> Callable[[], None]:
        return lambda: self._set_replicas(name, self._replicas()[name])

    def _wait_rollouts(self) -> None:
        deadline = Deadline.after(ROLLOUT_TIMEOUT_SECONDS, self.clock)
        pending, blocker = wait_rollouts(self.k, self.namespace, deadline)
        if blocker is not None:
            raise Exit(explain_blocker(self.k, self.namespace, blocker))
        if pending:
            late = ", ".join(f"{item.name} {item.ready}/{item.desired}" for item in pending)
            raise Exit(f"not ready within {ROLLOUT_TIMEOUT_SECONDS}s: {late}")

    def start_writers(self, names_: list[str]) -> None:
        self.close()
        for name in names_:
            self._starter(name)()
        self._wait_rollouts()

    def close(self) -> None:
        """Delete the helper Job (and with it its pod), if one was made."""
        if self.helper:
            attempt(self.c, self._helper_delete_command(self.helper), timeout=60)
            self.helper = self.helper_pod = ""

    def _helper_delete_command(self, name: str) -> str:
        return self.kubectl(
            "delete", "job", name, "--ignore-not-found", "--wait=false", "--cascade=background"
        )

    # --- verification ---------------------------------------------------------------------

    def _scratch_sql(self, statement: str) -> str:
        return self._in_postgres(postgres.sql_command(POD_ADMIN_CONNECT, statement))

    def drop_scratch(self, name: str) -> None:
        command = self._scratch_sql(postgres.drop_database_sql(name))
        self._run(command, "psql in the postgres pod", SQL_TIMEOUT_SECONDS)

    def scratch_steps(self, dump: Path, scratch: Scratch) -> ScratchSteps:
        pod, missing = self._read("the postgres pod", self._postgres_pod)
        if pod is None:
            return ScratchSteps(missing, [], [], [])

        def create(name: str) -> str:
            return self._scratch_sql(postgres.create_database_sql(name))

        def restore(name: str) -> str:
            command = self._in_postgres(postgres.restore_command(pod_connect(name)), stdin=True)
            return f"{command} < {shlex.quote(str(dump))}"

        def run_create() -> None:
            self._run(create(scratch.choose()), "psql in the postgres pod", SQL_TIMEOUT_SECONDS)

        def run_restore() -> None:
            label, what = (
                "restore into the scratch database",
                "pg_restore | psql in the postgres pod",
            )
            self._watched(restore(scratch.name), label, what, RESTORE_TIMEOUT_SECONDS)

        def run_count() -> None:
            tables = scratch.tables
            if tables:
                command = self._in_postgres(
                    postgres.count_rows_command(pod_connect(scratch.name), tables)
                )
                result = self._run(command, "psql in the postgres pod", SQL_TIMEOUT_SECONDS)
                scratch.counts = postgres.parse_rows(result.stdout, tables)

        counted = (
            f"the rows of each table the manifest counted, in {scratch.planned} (psql in pod "
            f"{pod}, SELECT count(*) of each)"
        )
        drop = self._scratch_sql(postgres.drop_database_sql(scratch.planned))
        return ScratchSteps(
            create=[Step("run", create(scratch.planned), run_create)],
            restore=[Step("run", restore(scratch.planned), run_restore)],
            count=[Step("count", counted, run_count)],
            drop=[Step("run", drop, lambda: self.drop_scratch(scratch.name))],
        )

    # --- the helper pod -------------------------------------------------------------------

    def _api_template(self) -> dict[str, Any]:
        deployment = read_or_none(self.k.apps.read_namespaced_deployment, names.API, self.namespace)
        if deployment is None:
            raise Exit(f"No Deployment api in {self.namespace}; deploy the stack first.")
        template: dict[str, Any] = self.k.api_client.sanitize_for_serialization(
            deployment.spec.template
        )
        return template

    def _mount(self) -> str:
        return uploads_mount(self._api_template())

    def _helper_step(self, mount: str) -> Step:
        job = f"Job {self.namespace}/{PLANNED_HELPER} (helper pod of the api template; {mount})"
        return Step("create", job, self._helper)

    def _helper_delete_step(self) -> Step:
        return Step("run", self._helper_delete_command(PLANNED_HELPER), self.close)

    def _in_helper(
        self,
        argv: list[str],
        *,
        label: str,
        what: str,
        timeout: float,
        redirect: str = "",
        stdin: bool = False,
        watch: Path | None = None,
        note: str = "",
        done: Callable[[], None] | None = None,
    ) -> Step:
        """The step running ARGV in the helper pod (its row names the pod as a pattern)."""

        def command(pod: str) -> str:
            return self._exec(pod, HELPER_CONTAINER, argv, stdin) + redirect

        def run() -> None:
            self._watched(command(self._helper()), label, what, timeout, watch)
            if done is not None:
                done()

        return Step("run", command(PLANNED_HELPER_POD) + note, run)

    def _helper(self) -> str:
        """Name of the running pod of the helper Job (made on first use)."""
        if self.helper_pod:
            return self.helper_pod
        name = f"{HELPER_PREFIX}{secrets.token_hex(3)}"
        with manifest_file([helper_job(self._api_template(), name)]) as path:
            self._run(self.kubectl("apply", "-f", path), "creating the helper Job", 60)
        self.helper = name
        selector = f"{JOB_NAME_LABEL}={name}"

        def pods() -> list[k8s.V1Pod]:
            return list(
                self.k.core.list_namespaced_pod(self.namespace, label_selector=selector).items
            )

        def started(found: list[k8s.V1Pod]) -> bool:
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
        ok(f"helper Job {name} runs pod {self.helper_pod}")
        return self.helper_pod
