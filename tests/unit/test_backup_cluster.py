"""backup/restore/verify of a cluster environment on the one fake API server: the generated
kubectl commands, their order, what they do to the cluster, the state a failure leaves, and dry
runs that print the plan the real run executes.

stage is deployed for real (deploy_release on the fake, the kubelet simulating the pods); the
backup reads it as a devops kubeconfig would (`invoke access.grant --role devops`). Its
`kubectl exec/patch/apply/delete` commands run through support.fakeapi.kubectl's context,
which applies them to the same fake (a writer scaled to 0 loses its pods, the helper Job gets
its pod, an exec needs a running pod); what runs inside a pod is answered by RESULTS.
The PostgreSQL pipelines these commands run are exercised for real by
tests/integration/test_backup_local.py (the same command builders, without `kubectl exec`).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import re
import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from invoke import Context, Exit, Result
from support.clock import FakeClock
from support.fakeapi.k3s import Cluster, config, prepare, rendered
from support.fakeapi.kinds import Kind
from support.fakeapi.kubectl import KubectlContext
from support.fakeapi.server import FakeApiServer
from support.plans import plan_cells, snapshot

from desbordante_ops.backup import archive, flow, scratch, targets
from desbordante_ops.backup.cluster_target import (
    HELPER_CONTAINER,
    HELPER_PREFIX,
    WRITERS,
    ClusterTarget,
    replicas_patch,
)
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.rollout import Clock
from desbordante_ops.core import plan
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.tasks import backup as backup_tasks

NAMESPACE = "desbordante-stage"
IMAGE = "ghcr.io/desbordante/desbordante-backend"
TAG = "v1.4.0"
DIGEST = "sha256:" + "ab" * 32  # what the kubelet reports for IMAGE:TAG
REVISION = {r"SELECT version_num": Result(stdout="0001\n")}
EMPTY = {
    r"SELECT version_num": Result(
        stderr='ERROR:  relation "alembic_version" does not exist', exited=1
    )
}
DUMP = b"PGDMP\x01\x0e\x00 a fake custom-format dump \xff\x00"
# What `pg_restore --data-only | awk` answers in the postgres pod for DUMP.
COUNTED = {
    r"pg_restore --data-only": Result(
        stdout="1\tCOPY public.alembic_version (version_num) FROM stdin;\n"
        "2\tCOPY public.datasets (id, name, size) FROM stdin;\n"
        "0\tCOPY public.profiling_tasks (id, dataset_id) FROM stdin;\n"
    )
}
COUNTS = {"public.alembic_version": 1, "public.datasets": 2, "public.profiling_tasks": 0}
# What counting them in a scratch database answers: `i|rows` in the manifest's order.
SCRATCH_COUNTS = {r"SELECT 0, count\(\*\)": Result(stdout="0|1\n1|2\n2|0\n")}


def uploads_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"id,city\n1,Berlin\n"
        info = tarfile.TarInfo("./datasets/0b7e.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


OUTPUTS = {r"pg_dump": DUMP, r" tar -C ": uploads_tar()}


@pytest.fixture
def stage(k3s: Cluster) -> Cluster:
    """stage deployed at TAG (the kubelet reports DIGEST for its image); the helper Job runs
    `sleep`, so its pod keeps running."""
    k3s.kubelet.image_ids[f"{IMAGE}:{TAG}"] = f"{IMAGE}@{DIGEST}"
    k3s.kubelet.behave(HELPER_PREFIX, job="run")
    prepare(k3s.admin, "stage")
    options = Options(yes=True, timeout=120, clock=FakeClock())
    deploy_release(
        Release(Context(), config("stage"), k3s.admin, TAG, rendered("stage", TAG), options)
    )
    return k3s


@pytest.fixture
def k(stage: Cluster) -> Kube:
    """A devops kubeconfig's connection to stage (what backup and restore need)."""
    return stage.grant("devops")


@pytest.fixture
def cfg() -> EnvConfig:
    return config("stage")


def target(c: KubectlContext, cfg: EnvConfig, k: Kube, clock: Clock | None = None) -> ClusterTarget:
    return ClusterTarget(c, cfg, k, clock=clock or FakeClock())


def pods(stage: Cluster, component: str) -> list[str]:
    """The names of COMPONENT's pods on the fake, by name."""
    selector = f"{names.COMPONENT_LABEL}={component}"
    return [p["metadata"]["name"] for p in stage.server.all("Pod", NAMESPACE, selector)]


def running(stage: Cluster, component: str) -> str:
    """The one running pod of COMPONENT."""
    selector = f"{names.COMPONENT_LABEL}={component}"
    (name,) = [
        p["metadata"]["name"]
        for p in stage.server.all("Pod", NAMESPACE, selector)
        if p["status"]["phase"] == "Running"
    ]
    return str(name)


def scale(stage: Cluster, name: str, replicas: int) -> None:
    """Deployment NAME set to REPLICAS (the kubelet adds or removes its pods)."""
    stage.admin.apps.patch_namespaced_deployment(name, NAMESPACE, {"spec": {"replicas": replicas}})


def replicas(stage: Cluster) -> dict[str, int]:
    """The replicas the writers' Deployments ask for."""
    found = {}
    for name in WRITERS:
        deployment = stage.server.get("Deployment", name, NAMESPACE)
        assert deployment is not None
        found[name] = deployment["spec"]["replicas"]
    return found


def helpers_left(stage: Cluster) -> list[str]:
    """Helper Jobs and their pods still on the fake."""
    return [
        f"{kind}/{obj['metadata']['name']}"
        for kind in ("Job", "Pod")
        for obj in stage.server.all(kind, NAMESPACE)
        if obj["metadata"]["name"].startswith(HELPER_PREFIX)
    ]


def writes(stage: Cluster) -> int:
    """How many writes the fake API server has answered so far."""
    return len(stage.server.writes())


def make_archive(
    stage: Cluster, cfg: EnvConfig, directory: Path, results: dict[str, Result]
) -> Path:
    c = KubectlContext(stage.admin, {**results, **COUNTED}, OUTPUTS)
    return flow.backup(target(c, cfg, stage.admin), directory)


def failed_restore(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    archived: dict[str, Result],
    failing: dict[str, Result] | None = None,
    **restore: Any,
) -> tuple[str, KubectlContext]:
    """Restore an archive (of a database answering ARCHIVED; with --yes unless RESTORE says
    otherwise) while FAILING commands fail: the one-line message and every command run."""
    path = make_archive(stage, cfg, tmp_path, archived)
    c = KubectlContext(k, failing)
    with pytest.raises(Exit) as raised:
        flow.restore(target(c, cfg, k), path, **(restore or {"yes": True}))
    return str(raised.value.message), c


def redirected(command: str, sign: str) -> str:
    """The file a command's shell redirection (`> file` / `< file`) names."""
    head, found, tail = command.rpartition(f" {sign} ")
    assert found and head, command
    return shlex.split(tail)[0]


def position(commands: list[str], needle: str) -> int:
    found = [i for i, command in enumerate(commands) if needle in command]
    assert len(found) == 1, f"{needle!r} in {found} of {commands}"
    return found[0]


def patch(name: str, replicas: int) -> str:
    """The replicas patch of Deployment NAME, as it appears in a command."""
    return f"patch deployment/{name} --type=merge -p '{replicas_patch(replicas)}'"


def kubectl_prefix(cfg: EnvConfig) -> str:
    return f"kubectl --kubeconfig {cfg.toolkit.KUBECONFIG_PATH} -n {NAMESPACE}"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions with In) against LABELS."""
    return all(
        labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()
    ) and all(
        term["operator"] == "In" and labels.get(term["key"]) in term["values"]
        for term in selector.get("matchExpressions", [])
    )


class Terminating:
    """The clock of a wait while the writers' pods terminate: the fake deletes pods at once,
    so when a writer is scaled to 0 its pods are put back with a deletionTimestamp, as the API
    server keeps them through their grace period. They go after GRACE sleeps (None: never, a
    pod stuck terminating). LISTS counts how often the writers' pods were listed."""

    def __init__(self, stage: Cluster, grace: int | None) -> None:
        self.stage, self.grace = stage, grace
        self.clock = FakeClock()
        self.slept = 0
        self.lingering = {
            name: stage.server.all("Pod", NAMESPACE, f"{names.COMPONENT_LABEL}={name}")
            for name in WRITERS
        }
        stage.server.after_write.append(self._written)

    def _written(self, server: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind.kind == "Deployment" and obj["spec"].get("replicas") == 0:
            for pod in self.lingering.get(name, []):
                pod["metadata"]["deletionTimestamp"] = "2026-11-26T12:00:00Z"
                server.seed(copy.deepcopy(pod))

    def now(self) -> float:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        self.slept += 1
        if self.grace is not None and self.slept >= self.grace:
            for name, left in self.lingering.items():
                for pod in left:
                    if self.stage.server.get("Pod", pod["metadata"]["name"], NAMESPACE):
                        self.stage.server.remove("Pod", pod["metadata"]["name"], NAMESPACE)
                self.lingering[name] = []

    @property
    def lists(self) -> int:
        return sum(
            1
            for r in self.stage.server.requests
            if r.method == "GET"
            and f"/namespaces/{NAMESPACE}/pods?" in r.path
            and f"in ({','.join(WRITERS)})" in unquote_plus(r.path)
        )


# --- backup ----------------------------------------------------------------------------------


def test_backup_dumps_in_the_postgres_pod_and_tars_in_the_api_pod(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    c = KubectlContext(k, {**REVISION, **COUNTED}, OUTPUTS)
    before = writes(stage)
    path = flow.backup(target(c, cfg, k), tmp_path)
    revision, dump, tar, count = c.commands
    prefix = f"{kubectl_prefix(cfg)} exec"
    assert revision.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert dump.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert 'pg_dump -Fc --no-password -U "$POSTGRES_USER" -d "$POSTGRES_DB"' in dump
    assert redirected(dump, ">").endswith(f"/{archive.DATABASE}")  # binary: shell to a file
    api_pod = running(stage, names.API)
    assert tar.startswith(f"{prefix} {api_pod} -c api -- tar -C /data/uploads ")
    assert "--exclude=incoming" in tar and redirected(tar, ">").endswith(f"/{archive.UPLOADS}")
    # The rows are counted in the dump itself, by the pod's pg_restore (the dump on stdin).
    assert count.startswith(f"{prefix} -i postgres-0 -c postgres -- bash -c ")
    assert "pg_restore --data-only -f - | awk" in count
    assert redirected(count, "<") == redirected(dump, ">")
    manifest = archive.read_manifest(path)
    assert (manifest.env, manifest.release, manifest.schema_revision) == ("stage", TAG, "0001")
    assert manifest.image == f"{IMAGE}@{DIGEST[:19]}"  # short_id: 12 hex digits
    assert manifest.source == f"namespace {NAMESPACE} on {k.host}"
    assert manifest.row_counts == COUNTS
    with tarfile.open(path) as outer:
        assert outer.extractfile(archive.DATABASE).read() == DUMP  # type: ignore[union-attr]
        assert outer.extractfile(archive.UPLOADS).read() == uploads_tar()  # type: ignore[union-attr]
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # staging removed
    assert writes(stage) == before + 4  # the 4 execs' access reviews: nothing else was written


def test_backup_without_a_running_api_pod_tars_in_a_helper_pod_then_removes_it(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    scale(stage, names.API, 0)
    c = KubectlContext(k, REVISION, OUTPUTS)
    flow.backup(target(c, cfg, k), tmp_path)
    apply, tar, delete = (position(c.commands, s) for s in (" apply -f ", " tar -C ", "delete job"))
    assert apply < tar < delete < position(c.commands, "pg_restore --data-only")
    job = c.applied[0]["metadata"]["name"]
    assert re.search(
        rf"exec {job}-[0-9a-f]{{5}} -c {HELPER_CONTAINER} -- tar -C /data/uploads", c.commands[tar]
    )
    assert c.commands[delete].endswith(
        f"delete job {job} --ignore-not-found --wait=false --cascade=background"
    )
    assert helpers_left(stage) == []  # the Job and, with it, its pod
    assert replicas(stage)[names.API] == 0 and pods(stage, names.API) == []  # left as it was


def test_helper_is_a_job_of_the_api_template_running_sleep(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    """A Job (the devops Role may create Jobs, not Pods) whose pod may reach PostgreSQL."""
    scale(stage, names.API, 0)
    c = KubectlContext(k, REVISION, OUTPUTS)
    flow.backup(target(c, cfg, k), tmp_path)
    (helper,) = c.applied
    assert helper["kind"] == "Job" and helper["spec"]["backoffLimit"] == 0
    assert helper["spec"]["activeDeadlineSeconds"] > 0
    template = helper["spec"]["template"]
    spec = template["spec"]
    assert "initContainers" not in spec
    labels = template["metadata"]["labels"]
    assert labels[names.COMPONENT_LABEL] == names.MIGRATE
    (container,) = spec["containers"]
    assert container["image"] == f"{IMAGE}:{TAG}" and container["command"][0] == "sleep"
    deployment = stage.server.get("Deployment", names.API, NAMESPACE)
    assert deployment is not None
    api_spec = deployment["spec"]["template"]["spec"]
    (api,) = [each for each in api_spec["containers"] if each["name"] == names.API]
    for key in ("securityContext", "envFrom", "env", "volumeMounts"):  # config, secrets, mounts
        assert container[key] == api[key], key
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data/uploads"}
    assert spec["volumes"] == api_spec["volumes"]
    assert spec["securityContext"] == api_spec["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["restartPolicy"] == "Never"
    # The NetworkPolicies stage runs let a pod with these labels reach PostgreSQL.
    policies = {p["metadata"]["name"]: p["spec"] for p in stage.server.all("NetworkPolicy")}
    postgres = stage.server.get("Pod", "postgres-0", NAMESPACE)
    assert postgres is not None
    egress = [to["podSelector"] for rule in policies["migrate"]["egress"] for to in rule["to"]]
    ingress = [of["podSelector"] for rule in policies["postgres"]["ingress"] for of in rule["from"]]
    assert selects(policies["migrate"]["podSelector"], labels)
    assert any(selects(to, postgres["metadata"]["labels"]) for to in egress)
    assert any(selects(of, labels) for of in ingress)
    # Pod Security (restricted, stage's namespace) admitted its pod: the tar ran in it.
    assert not [e for e in stage.server.all("Event", NAMESPACE) if e["reason"] == "FailedCreate"]


# --- restore ---------------------------------------------------------------------------------


def test_restore_scales_writers_down_before_and_up_after(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    during: dict[str, list[str]] = {}

    def look(command: str) -> None:
        """The writers' pods when the database and the files are restored."""
        if " pg_restore " in command or "cd /data/uploads;" in command:
            during[command] = pods(stage, names.API) + pods(stage, names.WORKER)

    c = KubectlContext(k, before=look)
    flow.restore(target(c, cfg, k), path, yes=True)
    commands = c.commands
    down_api = position(
        commands, 'patch deployment/api --type=merge -p \'{"spec": {"replicas": 0}}'
    )
    down_worker = position(
        commands, 'deployment/worker --type=merge -p \'{"spec": {"replicas": 0}}'
    )
    database = position(commands, "pg_restore")
    helper = position(commands, " apply -f ")
    files = position(commands, "-c restore -- bash -c")
    delete = position(commands, " delete job ")
    up_api, up_worker = (position(commands, patch(name, 1)) for name in ("api", "worker"))
    assert down_api < down_worker < database < files < delete < up_api < up_worker
    assert helper < files and "migrate" not in " ".join(commands)  # same revision: no migrate
    assert commands[database].startswith(f"{kubectl_prefix(cfg)} exec -i postgres-0 -c postgres")
    assert redirected(commands[database], "<").endswith(f"/{archive.DATABASE}")
    assert " exec -i restore-" in commands[files] and "cd /data/uploads;" in commands[files]
    assert redirected(commands[files], "<").endswith(f"/{archive.UPLOADS}")
    assert during == {commands[database]: [], commands[files]: []}  # no writer ran meanwhile
    assert replicas(stage) == {
        names.API: cfg.toolkit.API_REPLICAS,
        names.WORKER: cfg.toolkit.WORKER_REPLICAS,
    }
    assert running(stage, names.API) and running(stage, names.WORKER)
    assert helpers_left(stage) == []


def test_restore_waits_until_the_writers_pods_are_gone(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    clock = Terminating(stage, grace=2)  # they go after two polls
    listed: list[list[str]] = []

    def look(command: str) -> None:
        if " pg_restore " in command:
            listed.append(pods(stage, names.API) + pods(stage, names.WORKER))

    c = KubectlContext(k, before=look)
    flow.restore(target(c, cfg, k, clock), path, yes=True)
    assert clock.lists == 3 and listed == [[]]


def test_restore_of_an_older_archive_migrates_in_the_helper_before_scaling_up(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, EMPTY)
    assert archive.read_manifest(path).schema_revision is None
    c = KubectlContext(k)
    flow.restore(target(c, cfg, k), path, yes=True)
    migrate = position(c.commands, "desbordante-service migrate")
    assert re.search(
        rf" exec {HELPER_PREFIX}[0-9a-f]{{6}}-[0-9a-f]{{5}} -c {HELPER_CONTAINER} -- "
        "desbordante-service migrate$",
        c.commands[migrate],
    )
    files = position(c.commands, "-c restore -- bash -c")
    assert files < migrate < position(c.commands, patch("api", 1))


def test_database_failure_changes_nothing_and_starts_the_writers_again(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="pg_restore: error: unsupported version (1.16) in file header", exited=1)
    message, c = failed_restore(stage, k, cfg, tmp_path, REVISION, {"pg_restore": failed})
    assert message.startswith("Restore of stage failed while restoring the database: ")
    assert "unsupported version" in message and "\n" not in message
    assert message.endswith("Nothing was changed; api, worker run again.")
    assert not any(" apply -f " in command for command in c.commands)  # files untouched
    assert position(c.commands, "pg_restore") < position(c.commands, patch("api", 1))
    assert replicas(stage) == {names.API: 1, names.WORKER: 1}
    assert running(stage, names.API) and running(stage, names.WORKER)


def test_files_failure_says_the_database_is_restored_and_keeps_writers_stopped(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="tar: write error: No space left", exited=2)
    message, c = failed_restore(stage, k, cfg, tmp_path, REVISION, {" tar -C ": failed})
    assert "while restoring the uploaded files: tar in the helper pod: tar: write error" in message
    assert "The database is restored, the uploaded files are not (or only partly)" in message
    assert "api, worker stay stopped. Run the same restore again" in message
    assert not any(patch("api", 1) in command for command in c.commands)
    assert " delete job " in c.commands[-1]  # the helper is removed all the same
    assert helpers_left(stage) == []
    assert replicas(stage) == {names.API: 0, names.WORKER: 0}
    assert pods(stage, names.API) == pods(stage, names.WORKER) == []


def test_a_helper_pod_that_cannot_start_says_so_and_keeps_writers_stopped(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    stage.kubelet.behave(HELPER_PREFIX, job="run", unschedulable=True)
    c = KubectlContext(k)
    with pytest.raises(Exit) as raised:
        flow.restore(target(c, cfg, k), path, yes=True)
    message = str(raised.value.message)
    found = re.search(
        rf"the helper pod of Job ({HELPER_PREFIX}[0-9a-f]{{6}}) is Pending after 180s", message
    )
    assert found and message.startswith(
        "Restore of stage failed while restoring the uploaded files: "
    )
    assert f"`kubectl -n {NAMESPACE} describe job {found[1]}` says why" in message
    assert "The database is restored, the uploaded files are not" in message
    assert c.commands[-1].endswith(
        f"delete job {found[1]} --ignore-not-found --wait=false --cascade=background"
    )
    assert helpers_left(stage) == [] and replicas(stage) == {names.API: 0, names.WORKER: 0}


def test_writers_that_do_not_stop_stop_the_restore_before_any_change(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    stuck = running(stage, names.API), running(stage, names.WORKER)
    clock = Terminating(stage, grace=None)  # their pods never finish terminating
    c = KubectlContext(k)
    with pytest.raises(Exit) as raised:
        flow.restore(target(c, cfg, k, clock), path, yes=True)
    assert str(raised.value.message) == (
        "Restore of stage failed while stopping the writers: pods still running after 180s: "
        f"{stuck[0]}, {stuck[1]}. Nothing was changed; api, worker run again."
    )
    assert not any("pg_restore" in command for command in c.commands)
    assert c.commands[-2:] == [f"{kubectl_prefix(cfg)} {patch(n, 1)}" for n in ("api", "worker")]
    assert replicas(stage) == {names.API: 1, names.WORKER: 1}


def test_a_newer_schema_is_refused_before_any_command(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    newer = {r"SELECT version_num": Result(stdout="9f3e0c2b7a11\n")}
    message, c = failed_restore(stage, k, cfg, tmp_path, newer)
    assert message.startswith(
        "The archive's schema revision 9f3e0c2b7a11 is newer than this code's head 0001: "
    )
    assert c.commands == []


@pytest.mark.parametrize("answer", ["", "prod", "yes"])
def test_restore_asks_for_the_environment_name(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path, answer: str
) -> None:
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return answer

    message, c = failed_restore(stage, k, cfg, tmp_path, REVISION, ask=ask, interactive=True)
    assert message == "Not confirmed; nothing was changed."
    assert "Type the environment name (stage)" in questions[0] and c.commands == []
    assert replicas(stage) == {names.API: 1, names.WORKER: 1}


def test_restore_goes_on_with_the_typed_name_and_refuses_without_a_terminal(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    c = KubectlContext(k)
    with pytest.raises(Exit, match=r"No terminal to confirm on; nothing was changed\. Pass --yes"):
        flow.restore(target(c, cfg, k), path, interactive=False)
    assert c.commands == []
    flow.restore(target(c, cfg, k), path, ask=lambda q: " stage\n", interactive=True)
    assert any("pg_restore" in command for command in c.commands)


def test_migration_failure_says_the_data_is_restored_but_not_migrated(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="migrate: failed: boom", exited=1)
    message, _ = failed_restore(stage, k, cfg, tmp_path, EMPTY, {"service migrate": failed})
    assert message == (
        "Restore of stage failed while migrating the schema: migrate in the helper pod: "
        "migrate: failed: boom. The database and the uploaded files are restored, the schema is "
        "not migrated; api, worker stay stopped. Run the same restore again to finish it (it is "
        "safe to repeat)."
    )
    assert replicas(stage) == {names.API: 0, names.WORKER: 0} and helpers_left(stage) == []


def test_writers_not_coming_back_say_the_data_is_restored(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="denied", exited=1)
    worker_up = r'deployment/worker .*"replicas": 1'
    message, _ = failed_restore(stage, k, cfg, tmp_path, REVISION, {worker_up: failed})
    assert message == (
        "Restore of stage failed while starting the writers again: kubectl patch: denied. "
        "The data is restored; start api, worker yourself."
    )
    assert replicas(stage) == {names.API: 1, names.WORKER: 0}


def test_a_writer_patch_the_api_refuses_is_the_kubectl_error(
    stage: Cluster, cfg: EnvConfig, tmp_path: Path
) -> None:
    """A viewer kubeconfig may read everything the plan reads but patch nothing: the restore
    stops at the first patch, with kubectl's line, and nothing was changed."""
    viewer = stage.grant("viewer", user="viola")
    message, c = failed_restore(stage, viewer, cfg, tmp_path, REVISION)
    assert message.startswith(
        "Restore of stage failed while stopping the writers: kubectl patch: Error from server "
        '(Forbidden): deployments.apps "api" is forbidden: User "system:serviceaccount:'
    )
    assert not any("pg_restore" in command for command in c.commands)
    assert replicas(stage) == {names.API: 1, names.WORKER: 1}


def test_a_backup_that_cannot_write_says_so_in_one_line(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    c = KubectlContext(k, REVISION, OUTPUTS)
    with pytest.raises(Exit) as raised:
        flow.backup(target(c, cfg, k), tmp_path / "a-file" / "backups")
    assert str(raised.value.message) == (
        f"Backup failed: Not a directory ({tmp_path / 'a-file' / 'backups'}); no archive was "
        "written. Free space there or pass --output DIR."
    )


# --- verification ------------------------------------------------------------------------------


def scratch_of(command: str) -> str:
    """The scratch database a CREATE/DROP DATABASE command names."""
    found = command.split('DATABASE IF EXISTS "' if "DROP" in command else 'DATABASE "')[1]
    return found.split('"')[0]


@pytest.mark.usefixtures("wide_console")
def test_backup_verify_restores_into_a_scratch_database_in_the_pod_and_drops_it(
    k: Kube, cfg: EnvConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = KubectlContext(k, {**REVISION, **COUNTED, **SCRATCH_COUNTS}, OUTPUTS)
    path = flow.backup(target(c, cfg, k), tmp_path, verify_it=True)
    create, restore, count, drop = c.commands[-4:]
    prefix = f"{kubectl_prefix(cfg)} exec"
    name = scratch_of(create)
    assert name.startswith(f"{cfg.backend.POSTGRES_DB}_verify_") and len(name) <= 63
    assert create.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert '-U "$POSTGRES_USER" -d postgres' in create and "TEMPLATE template0" in create
    assert restore.startswith(f"{prefix} -i postgres-0 -c postgres -- bash -c ")
    assert f'-U "$POSTGRES_USER" -d {name}' in restore and "pg_restore --no-owner" in restore
    assert redirected(restore, "<") == str(tmp_path / f".{path.name}.verify" / archive.DATABASE)
    assert f"-d {name} -c " in count and "FROM public.profiling_tasks ORDER BY 1" in count
    assert "DROP DATABASE IF EXISTS" in drop and scratch_of(drop) == name
    assert not any('"$POSTGRES_DB"' in cmd for cmd in (create, restore, count, drop))  # live db
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # verified: same name
    assert f"{path.name} verified: its dump restores, and its 3 tables hold the 3 rows" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("failing", "message"),
    [
        (
            {r"pg_restore --no-owner": Result(stderr="pg_restore: error: bad dump", exited=1)},
            "failed while restoring the dump into the scratch database: pg_restore | psql in the "
            "postgres pod: pg_restore: error: bad dump.",
        ),
        (
            {r"SELECT 0, count\(\*\)": Result(stdout="0|1\n1|3\n2|0\n")},
            "failed while comparing the row counts: the row counts differ from the manifest's: "
            "public.datasets has 3 rows instead of 2.",
        ),
    ],
)
def test_a_failed_verification_renames_the_archive_and_drops_the_scratch_database(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    failing: dict[str, Result],
    message: str,
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    c = KubectlContext(k, {**SCRATCH_COUNTS, **failing})
    with pytest.raises(Exit) as raised:
        plan.execute(scratch.verify_plan(target(c, cfg, k), path))
    unverified = path.with_name(path.name.replace(".tar", ".unverified.tar"))
    assert str(raised.value.message) == (
        f"Verification of {path.name} {message} The archive is kept as {unverified.name}; "
        "do not rely on it: take a new backup."
    )
    assert not path.exists() and unverified.is_file()
    assert [entry.name for entry in tmp_path.iterdir()] == [unverified.name]  # no staging left
    creates = [cmd for cmd in c.commands if "CREATE DATABASE" in cmd]
    drops = [cmd for cmd in c.commands if "DROP DATABASE" in cmd]
    assert len(creates) == len(drops) == 1 and scratch_of(drops[0]) == scratch_of(creates[0])
    assert c.commands.index(drops[0]) > c.commands.index(creates[0])

    # Verified again (the fault gone): it gets its name back.
    again = KubectlContext(k, SCRATCH_COUNTS)
    plan.execute(scratch.verify_plan(target(again, cfg, k), unverified))
    assert path.is_file() and not unverified.exists()


def test_a_scratch_database_that_cannot_be_created_leaves_the_archive_named_as_it_was(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    denied = Result(stderr="ERROR:  permission denied to create database", exited=1)
    c = KubectlContext(k, {"CREATE DATABASE": denied})
    with pytest.raises(Exit) as raised:
        plan.execute(scratch.verify_plan(target(c, cfg, k), path))
    assert str(raised.value.message) == (
        f"Verification of {path.name} failed while creating the scratch database: psql in the "
        "postgres pod: ERROR:  permission denied to create database. The archive was not "
        f"verified (its name is unchanged); run `invoke backup --verify {path}` again once that "
        "is fixed."
    )
    assert path.is_file() and not any("pg_restore" in cmd for cmd in c.commands)
    assert "DROP DATABASE IF EXISTS" in c.commands[-1]  # whatever happens


def test_an_archive_without_row_counts_cannot_be_verified(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    with tarfile.open(path) as tar:
        staged = tmp_path / "staged"
        tar.extractall(staged, filter="data")
    older = archive.read_manifest(path).model_copy(update={"row_counts": None, "members": {}})
    members = {name: staged / name for name in archive.MEMBERS}
    archive.write_archive(path, older, members)
    c = dry_run_cluster(monkeypatch, k)
    for dry_run in (True, False):
        with pytest.raises(Exit) as raised:
            backup_tasks.backup(c, env="stage", verify=str(path), dry_run=dry_run)
        assert str(raised.value.message) == (
            f"{path.name} records no row counts (an archive of an older toolkit), so its restore "
            "cannot be compared with them; take a new backup (`invoke backup --verify`)."
        )
    assert c.commands == []


# --- dry runs ----------------------------------------------------------------------------------


def dry_run_cluster(monkeypatch: pytest.MonkeyPatch, k: Kube) -> KubectlContext:
    """The tasks connect to the fake as K; every command they run is recorded and applied."""
    monkeypatch.setattr(targets.client, "connect", lambda cfg: k)
    return KubectlContext(k, {**REVISION, **COUNTED, **SCRATCH_COUNTS}, OUTPUTS)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[plan.Plan]]:
    """Every plan the tasks execute (executed for real by core.plan.execute)."""
    plans: list[plan.Plan] = []

    def recording(item: plan.Plan, dry_run: bool = False) -> list[plan.Step]:
        plans.append(item)
        return plan.execute(item, dry_run)

    monkeypatch.setattr(backup_tasks, "execute", recording)
    yield plans


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """One clock reading for the whole test (a dry run and its real run name one archive)."""
    now = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(archive, "utc_now", lambda: now)
    return now


def assert_same_plan(seen: list[plan.Seen], plans: list[plan.Plan]) -> None:
    """The dry run printed the rows the real run printed, and the real run ran exactly the
    runnable ones, in order; the dry run ran none."""
    (dry, real), (_, executed) = seen, plans
    assert (dry.dry_run, real.dry_run) == (True, False)
    assert dry.rows == real.rows and dry.title == real.title
    assert dry.ran == [] and real.ran == plan.runnable(executed.steps)


@pytest.mark.usefixtures("wide_console")
def test_backup_dry_run_lists_the_commands_and_the_archive_and_runs_none(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = dry_run_cluster(monkeypatch, k)
    out = tmp_path / "backups"
    before = writes(stage)
    backup_tasks.backup(c, env="stage", output=str(out), dry_run=True)
    assert c.commands == [] and not out.exists() and writes(stage) == before
    rows = plan_cells(capsys.readouterr().out)
    prefix = f"{kubectl_prefix(cfg)} exec"
    assert rows[0] == ("create", f"directory {out} (mode 0700)")
    action, staging = rows[1]
    assert action == "create" and staging.startswith(f"directory {out}/.desbordante-stage-")
    assert rows[2][0] == "read" and "SELECT version_num FROM alembic_version" in rows[2][1]
    assert rows[3][0] == "run" and rows[3][1].startswith(f"{prefix} postgres-0 -c postgres -- ")
    assert "pg_dump -Fc" in rows[3][1]
    dump = Path(redirected(rows[3][1], ">"))
    assert dump.name == archive.DATABASE and staging.startswith(f"directory {dump.parent} ")
    api_pod = running(stage, names.API)
    assert rows[4][1].startswith(f"{prefix} {api_pod} -c api -- tar -C /data/uploads ")
    assert "pg_restore --data-only" in rows[5][1] and redirected(rows[5][1], "<") == str(dump)
    action, written = rows[6]
    assert action == "write" and written.startswith(f"{out}/desbordante-stage-")
    assert "(mode 0600): archive of database.dump, uploads.tar and manifest.json" in written
    assert len(rows) == 7


@pytest.mark.usefixtures("wide_console")
def test_backup_dry_run_without_an_api_pod_plans_the_helper_job(
    stage: Cluster,
    k: Kube,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = dry_run_cluster(monkeypatch, k)
    scale(stage, names.API, 0)
    before = writes(stage)
    backup_tasks.backup(c, env="stage", output=str(tmp_path), dry_run=True)
    assert c.commands == [] and c.applied == [] and writes(stage) == before
    assert helpers_left(stage) == []
    rows = plan_cells(capsys.readouterr().out)
    assert [action for action, _ in rows] == [
        "create",
        "read",
        "run",
        "create",
        "run",
        "run",
        "run",
        "write",
    ]
    assert rows[3][1].startswith(f"Job {NAMESPACE}/restore-XXXXXX (helper pod")
    assert f"exec '<pod of restore-XXXXXX>' -c {HELPER_CONTAINER} -- tar -C" in rows[4][1]
    assert rows[5][1].endswith(
        "delete job restore-XXXXXX --ignore-not-found --wait=false --cascade=background"
    )


@pytest.mark.usefixtures("wide_console", "frozen")
@pytest.mark.parametrize("api_runs", [True, False])
def test_backup_with_verify_runs_the_plan_its_dry_run_printed(
    stage: Cluster,
    k: Kube,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    built: list[plan.Plan],
    api_runs: bool,
) -> None:
    c = dry_run_cluster(monkeypatch, k)
    if not api_runs:
        scale(stage, names.API, 0)  # the files come through the helper Job
    out = tmp_path / "backups"
    with plan.watching() as seen:
        before = writes(stage)
        backup_tasks.backup(c, env="stage", output=str(out), verify=True, dry_run=True)
        assert c.commands == [] and not out.exists() and writes(stage) == before
        dry_rows = plan_cells(capsys.readouterr().out)
        backup_tasks.backup(c, env="stage", output=str(out), verify=True)
    assert_same_plan(seen, built)
    assert dry_rows == [(a, " ".join(t.split())) for a, t in seen[0].rows]  # what was printed
    assert [action for action, _ in seen[0].rows[-6:]] == [
        "unpack",
        "run",
        "run",
        "count",
        "run",
        "compare",
    ]
    assert "desbordante_verify_XXXXXXXX" in seen[0].rows[-5][1]
    (path,) = out.glob("*.tar")
    assert path.name == "desbordante-stage-20261126T120000Z.tar"
    assert archive.read_manifest(path).row_counts == COUNTS
    assert (len(c.applied) == 1) != api_runs and helpers_left(stage) == []


@pytest.mark.usefixtures("wide_console", "frozen")
def test_verify_of_an_archive_runs_the_plan_its_dry_run_printed(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built: list[plan.Plan],
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    c = dry_run_cluster(monkeypatch, k)
    with plan.watching() as seen:
        backup_tasks.backup(c, env="stage", verify=str(path), dry_run=True)
        assert c.commands == []
        backup_tasks.backup(c, env="stage", verify=str(path))
    assert_same_plan(seen, built)
    assert seen[0].title == f"verification of {path.name} on namespace {NAMESPACE} on {k.host}"
    assert [action for action, _ in seen[0].rows] == [
        "unpack",
        "run",
        "run",
        "count",
        "run",
        "compare",
    ]
    assert path.is_file()


@pytest.mark.usefixtures("wide_console")
def test_restore_dry_run_verifies_the_archive_asks_nothing_and_changes_nothing(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(stage, cfg, tmp_path, EMPTY)  # an older schema: migrations would run
    c = dry_run_cluster(monkeypatch, k)
    before, scaled, written = snapshot(tmp_path), replicas(stage), writes(stage)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked during a dry run"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before
    assert replicas(stage) == scaled and writes(stage) == written
    out = capsys.readouterr().out
    assert "checksums match; schema empty database, older than the code's head 0001" in out
    rows = plan_cells(out)
    staging = tmp_path / f".{path.name}.restore-stage"
    down = [f"{kubectl_prefix(cfg)} {patch(name, 0)}" for name in ("api", "worker")]
    up = [f"{kubectl_prefix(cfg)} {patch(name, 1)}" for name in ("api", "worker")]
    assert rows[:5] == [
        ("ask", "type stage to confirm (--yes skips it)"),
        (
            "unpack",
            f"the archive's members into {staging} (checksums checked again; removed at the end)",
        ),
        ("run", down[0]),
        ("run", down[1]),
        ("wait", "until no api or worker pod is left (180 s at most)"),
    ]
    assert rows[5][1].startswith(f"{kubectl_prefix(cfg)} exec -i postgres-0 -c postgres -- ")
    assert redirected(rows[5][1], "<") == str(staging / archive.DATABASE)
    assert rows[6][0] == "create" and "cd /data/uploads;" in rows[7][1]
    assert rows[8][1].endswith(
        f"-c {HELPER_CONTAINER} -- desbordante-service migrate (schema from an empty database "
        "to 0001)"
    )
    assert rows[9][1].endswith(
        "delete job restore-XXXXXX --ignore-not-found --wait=false --cascade=background"
    )
    assert rows[10:] == [
        ("run", up[0]),
        ("run", up[1]),
        ("wait", "for the rollouts of api and worker (600 s at most)"),
    ]


@pytest.mark.usefixtures("wide_console")
@pytest.mark.parametrize("schema", ["head", "older"])
def test_restore_runs_the_plan_its_dry_run_printed(
    stage: Cluster,
    k: Kube,
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built: list[plan.Plan],
    schema: str,
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION if schema == "head" else EMPTY)
    c = dry_run_cluster(monkeypatch, k)
    with plan.watching() as seen:
        backup_tasks.restore(c, env="stage", archive=str(path), yes=True, dry_run=True)
        assert c.commands == [] and replicas(stage) == {names.API: 1, names.WORKER: 1}
        backup_tasks.restore(c, env="stage", archive=str(path), yes=True)
    assert_same_plan(seen, built)
    assert seen[0].rows[0][0] == "unpack"  # --yes: nothing to ask
    assert any("pg_restore" in command for command in c.commands)
    assert ("migrate" in " ".join(c.commands)) == (schema == "older")
    assert replicas(stage) == {names.API: 1, names.WORKER: 1}
    assert running(stage, names.API) and running(stage, names.WORKER)
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # staging removed
    assert helpers_left(stage) == []


def test_restore_dry_run_refuses_a_damaged_archive_like_the_restore(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    data = bytearray(path.read_bytes())
    data[515] ^= 0xFF  # inside database.dump, the first member (its data follows a 512 B header)
    path.write_bytes(bytes(data))
    c = dry_run_cluster(monkeypatch, k)
    before = snapshot(tmp_path)
    for dry_run in (True, False):
        with pytest.raises(Exit, match="does not match its checksum"):
            backup_tasks.restore(c, env="stage", archive=str(path), yes=True, dry_run=dry_run)
    with pytest.raises(Exit, match="does not match its checksum"):
        backup_tasks.backup(c, env="stage", verify=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before
    newer = make_archive(
        stage, cfg, tmp_path / "newer", {r"SELECT version_num": Result("9f3e0c\n")}
    )
    with pytest.raises(Exit, match="newer than this code's head"):
        backup_tasks.restore(c, env="stage", archive=str(newer), dry_run=True)


@pytest.mark.usefixtures("wide_console")
def test_without_a_cluster_dry_runs_print_their_steps_and_real_runs_refuse(
    stage: Cluster,
    cfg: EnvConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    missing = tmp_path / "no.kubeconfig"
    sets = [f"KUBECONFIG_PATH={missing}"]
    out = str(tmp_path / "out")
    c = KubectlContext(stage.admin)
    backup_tasks.backup(c, env="stage", output=out, set_=sets, verify=True, dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    assert [action for action, _ in rows] == ["create", "create", "unknown", "write", "unpack"]
    assert rows[2][1].startswith(f"the cluster of stage: No kubeconfig at {missing}")
    backup_tasks.restore(c, env="stage", archive=str(path), set_=sets, yes=True, dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    assert [action for action, _ in rows] == ["unknown", "unpack"]
    backup_tasks.backup(c, env="stage", set_=sets, verify=str(path), dry_run=True)
    assert [action for action, _ in plan_cells(capsys.readouterr().out)] == ["unknown", "unpack"]
    with pytest.raises(Exit) as raised:
        backup_tasks.restore(c, env="stage", archive=str(path), set_=sets, yes=True)
    assert str(raised.value.message).startswith(
        f"Cannot go on: the cluster of stage: No kubeconfig at {missing}: run `sudo invoke"
    )
    with pytest.raises(Exit, match=r"^Cannot go on: the cluster of stage: No kubeconfig"):
        backup_tasks.backup(c, env="stage", output=out, set_=sets)
    assert c.commands == [] and not Path(out).exists()
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]


def test_a_restore_without_a_terminal_refuses_before_any_step(
    stage: Cluster, k: Kube, cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(stage, cfg, tmp_path, REVISION)
    c = dry_run_cluster(monkeypatch, k)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)  # prints, exits 0
    with pytest.raises(Exit, match=r"^No terminal to confirm on; nothing was changed\. Pass"):
        backup_tasks.restore(c, env="stage", archive=str(path))
    assert c.commands == [] and replicas(stage) == {names.API: 1, names.WORKER: 1}


@pytest.mark.usefixtures("wide_console")
def test_a_postgres_pod_that_does_not_run_is_one_unknown_row_and_the_real_run_refuses(
    stage: Cluster,
    k: Kube,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = dry_run_cluster(monkeypatch, k)
    postgres = stage.server.get("Pod", "postgres-0", NAMESPACE)
    assert postgres is not None
    postgres["status"]["phase"] = "Pending"  # being scheduled again
    stage.server.seed(postgres)
    out = str(tmp_path / "out")
    backup_tasks.backup(c, env="stage", output=out, verify=True, dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    unknowns = [target for action, target in rows if action == "unknown"]
    assert len(unknowns) == 1 and unknowns[0].startswith("the postgres pod: ")
    with pytest.raises(Exit) as raised:
        backup_tasks.backup(c, env="stage", output=out, verify=True)
    assert str(raised.value.message) == f"Cannot go on: {unknowns[0]}."
    assert c.commands == [] and not Path(out).exists()
