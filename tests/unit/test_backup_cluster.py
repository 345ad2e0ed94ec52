"""backup/restore of a cluster environment: generated kubectl commands, their order, and the
state a failure leaves (MockContext + the in-memory cluster of tests/support/fake_cluster.py).

The PostgreSQL pipelines these commands run are exercised for real by
tests/integration/test_backup_local.py (the same command builders, without `kubectl exec`).
"""

from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, Result
from support.fake_cluster import DIGEST, HOST, IMAGE, TAG, ScalingContext, fake_cluster
from support.fake_kube import FakeClock

from desbordante_ops.backup import archive, flow
from desbordante_ops.backup.cluster import HELPER_CONTAINER, ClusterTarget, replicas_patch
from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import Kube
from desbordante_ops.core.settings import EnvConfig, load_config

REVISION = {r"SELECT version_num": Result(stdout="0001\n")}
EMPTY = {
    r"SELECT version_num": Result(
        stderr='ERROR:  relation "alembic_version" does not exist', exited=1
    )
}
DUMP = b"PGDMP\x01\x0e\x00 a fake custom-format dump \xff\x00"


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
def cfg() -> EnvConfig:
    return load_config("stage", environ={})


def target(c: ScalingContext, cfg: EnvConfig, k: Kube) -> ClusterTarget:
    return ClusterTarget(c, cfg, k, clock=FakeClock())


def make_archive(cfg: EnvConfig, directory: Path, results: dict[str, Result]) -> Path:
    k = fake_cluster()
    return flow.backup(target(ScalingContext(k, results, OUTPUTS), cfg, k), directory)


def failed_restore(
    cfg: EnvConfig,
    tmp_path: Path,
    archived: dict[str, Result],
    failing: dict[str, Result] | None = None,
    **restore: Any,
) -> tuple[str, ScalingContext]:
    """Restore an archive (of a database answering ARCHIVED; with --yes unless RESTORE says
    otherwise) while FAILING commands fail: the one-line message and every command run."""
    path = make_archive(cfg, tmp_path, archived)
    k = fake_cluster()
    c = ScalingContext(k, failing)
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
    return f"kubectl --kubeconfig {cfg.toolkit.KUBECONFIG_PATH} -n desbordante-stage"


# --- backup ----------------------------------------------------------------------------------


def test_backup_dumps_in_the_postgres_pod_and_tars_in_the_api_pod(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    k = fake_cluster()
    c = ScalingContext(k, REVISION, OUTPUTS)
    path = flow.backup(target(c, cfg, k), tmp_path)
    revision, dump, tar = c.commands
    prefix = f"{kubectl_prefix(cfg)} exec"
    assert revision.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert dump.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert 'pg_dump -Fc --no-password -U "$POSTGRES_USER" -d "$POSTGRES_DB"' in dump
    assert redirected(dump, ">").endswith(f"/{archive.DATABASE}")  # binary: shell to a file
    assert tar.startswith(f"{prefix} api-7d9f-abcde -c api -- tar -C /data/uploads ")
    assert "--exclude=incoming" in tar and redirected(tar, ">").endswith(f"/{archive.UPLOADS}")
    manifest = archive.read_manifest(path)
    assert (manifest.env, manifest.release, manifest.schema_revision) == ("stage", TAG, "0001")
    assert manifest.image == f"{IMAGE}@{DIGEST[:19]}"  # short_id: 12 hex digits
    assert manifest.source == f"namespace desbordante-stage on {HOST}"
    with tarfile.open(path) as outer:
        assert outer.extractfile(archive.DATABASE).read() == DUMP  # type: ignore[union-attr]
        assert outer.extractfile(archive.UPLOADS).read() == uploads_tar()  # type: ignore[union-attr]


def test_backup_without_a_running_api_pod_tars_in_a_helper_pod_then_removes_it(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    k = fake_cluster()
    k.apps.scale(names.API, 0)
    c = ScalingContext(k, REVISION, OUTPUTS)
    flow.backup(target(c, cfg, k), tmp_path)
    apply, tar, delete = (position(c.commands, s) for s in (" apply -f ", " tar -C ", "delete job"))
    assert apply < tar < delete == len(c.commands) - 1
    job = c.applied[0]["metadata"]["name"]
    assert f"exec {job}-x7k2p -c {HELPER_CONTAINER} -- tar -C /data/uploads" in c.commands[tar]
    assert c.commands[delete].endswith(
        f"delete job {job} --ignore-not-found --wait=false --cascade=background"
    )
    assert not any(p.metadata.name.startswith(job) for p in k.core.pods)


def test_helper_is_a_job_of_the_api_template_running_sleep(cfg: EnvConfig, tmp_path: Path) -> None:
    """A Job (the devops Role may create Jobs, not Pods) whose pod may reach PostgreSQL."""
    k = fake_cluster()
    k.apps.scale(names.API, 0)
    c = ScalingContext(k, REVISION, OUTPUTS)
    flow.backup(target(c, cfg, k), tmp_path)
    (helper,) = c.applied
    assert helper["kind"] == "Job" and helper["spec"]["backoffLimit"] == 0
    assert helper["spec"]["activeDeadlineSeconds"] > 0
    template = helper["spec"]["template"]
    spec = template["spec"]
    assert "initContainers" not in spec
    assert template["metadata"]["labels"][names.COMPONENT_LABEL] == names.MIGRATE
    (container,) = spec["containers"]
    assert container["image"] == f"{IMAGE}:{TAG}" and container["command"][0] == "sleep"
    assert container["securityContext"] == {"readOnlyRootFilesystem": True}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data/uploads"}
    assert container["envFrom"] and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["restartPolicy"] == "Never"


# --- restore ---------------------------------------------------------------------------------


def test_restore_scales_writers_down_before_and_up_after(cfg: EnvConfig, tmp_path: Path) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    c = ScalingContext(k)
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
    assert k.apps.workloads[names.API].replicas == cfg.toolkit.API_REPLICAS


def test_restore_waits_until_the_writers_pods_are_gone(cfg: EnvConfig, tmp_path: Path) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    original = k.apps.scale
    polls: list[int] = []

    def slow_scale(name: str, replicas: int) -> None:
        if replicas:
            original(name, replicas)  # scaling up: at once

    k.apps.scale = slow_scale
    listing = k.core.list_namespaced_pod

    def list_pods(namespace: str, label_selector: str = "") -> object:
        if "in (api,worker)" in label_selector:
            polls.append(1)
            if len(polls) == 3:  # the controller removes them after two polls
                original(names.API, 0)
                original(names.WORKER, 0)
        return listing(namespace, label_selector)

    k.core.list_namespaced_pod = list_pods
    c = ScalingContext(k)
    flow.restore(target(c, cfg, k), path, yes=True)
    assert len(polls) == 3


def test_restore_of_an_older_archive_migrates_in_the_helper_before_scaling_up(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(cfg, tmp_path, EMPTY)
    assert archive.read_manifest(path).schema_revision is None
    k = fake_cluster()
    c = ScalingContext(k)
    flow.restore(target(c, cfg, k), path, yes=True)
    migrate = position(c.commands, "desbordante-service migrate")
    assert f"-c {HELPER_CONTAINER} -- desbordante-service migrate" in c.commands[migrate]
    files = position(c.commands, "-c restore -- bash -c")
    assert files < migrate < position(c.commands, patch("api", 1))


def test_database_failure_changes_nothing_and_starts_the_writers_again(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="pg_restore: error: unsupported version (1.16) in file header", exited=1)
    message, c = failed_restore(cfg, tmp_path, REVISION, {"pg_restore": failed})
    assert message.startswith("Restore of stage failed while restoring the database: ")
    assert "unsupported version" in message and "\n" not in message
    assert message.endswith("Nothing was changed; api, worker run again.")
    assert not any(" apply -f " in command for command in c.commands)  # files untouched
    assert position(c.commands, "pg_restore") < position(c.commands, patch("api", 1))


def test_files_failure_says_the_database_is_restored_and_keeps_writers_stopped(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="tar: write error: No space left", exited=2)
    message, c = failed_restore(cfg, tmp_path, REVISION, {" tar -C ": failed})
    assert "while restoring the uploaded files: tar in the helper pod: tar: write error" in message
    assert "The database is restored, the uploaded files are not (or only partly)" in message
    assert "api, worker stay stopped. Run the same restore again" in message
    assert not any(patch("api", 1) in command for command in c.commands)
    assert " delete job " in c.commands[-1]  # the helper is removed all the same


def test_writers_that_do_not_stop_stop_the_restore_before_any_change(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    k.apps.scale = lambda name, replicas: None
    c = ScalingContext(k)
    with pytest.raises(Exit) as raised:
        flow.restore(target(c, cfg, k), path, yes=True)
    assert str(raised.value.message) == (
        "Restore of stage failed while stopping the writers: pods still running after 180s: "
        "api-7d9f-abcde, worker-5c4b-fghij. Nothing was changed; api, worker run again."
    )
    assert not any("pg_restore" in command for command in c.commands)
    assert c.commands[-2:] == [f"{kubectl_prefix(cfg)} {patch(n, 1)}" for n in ("api", "worker")]


def test_a_newer_schema_is_refused_before_any_command(cfg: EnvConfig, tmp_path: Path) -> None:
    newer = {r"SELECT version_num": Result(stdout="9f3e0c2b7a11\n")}
    message, c = failed_restore(cfg, tmp_path, newer)
    assert message.startswith(
        "The archive's schema revision 9f3e0c2b7a11 is newer than this code's head 0001: "
    )
    assert c.commands == []


@pytest.mark.parametrize("answer", ["", "prod", "yes"])
def test_restore_asks_for_the_environment_name(cfg: EnvConfig, tmp_path: Path, answer: str) -> None:
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return answer

    message, c = failed_restore(cfg, tmp_path, REVISION, ask=ask, interactive=True)
    assert message == "Not confirmed; nothing was changed."
    assert "Type the environment name (stage)" in questions[0] and c.commands == []


def test_restore_goes_on_with_the_typed_name_and_refuses_without_a_terminal(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    c = ScalingContext(k)
    with pytest.raises(Exit, match=r"No terminal to confirm on; nothing was changed\. Pass --yes"):
        flow.restore(target(c, cfg, k), path, interactive=False)
    assert c.commands == []
    flow.restore(target(c, cfg, k), path, ask=lambda q: " stage\n", interactive=True)
    assert any("pg_restore" in command for command in c.commands)


def test_migration_failure_says_the_data_is_restored_but_not_migrated(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    failed = Result(stderr="migrate: failed: boom", exited=1)
    message, _ = failed_restore(cfg, tmp_path, EMPTY, {"service migrate": failed})
    assert message == (
        "Restore of stage failed while migrating the schema: migrate in the helper pod: "
        "migrate: failed: boom. The database and the uploaded files are restored, the schema is "
        "not migrated; api, worker stay stopped. Run the same restore again to finish it (it is "
        "safe to repeat)."
    )


def test_writers_not_coming_back_say_the_data_is_restored(cfg: EnvConfig, tmp_path: Path) -> None:
    failed = Result(stderr="denied", exited=1)
    worker_up = r'deployment/worker .*"replicas": 1'
    message, _ = failed_restore(cfg, tmp_path, REVISION, {worker_up: failed})
    assert message == (
        "Restore of stage failed while starting the writers again: kubectl patch: denied. "
        "The data is restored; start api, worker yourself."
    )


def test_a_backup_that_cannot_write_says_so_in_one_line(cfg: EnvConfig, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    k = fake_cluster()
    c = ScalingContext(k, REVISION, OUTPUTS)
    with pytest.raises(Exit) as raised:
        flow.backup(target(c, cfg, k), tmp_path / "a-file" / "backups")
    assert str(raised.value.message) == (
        f"Backup failed: Not a directory ({tmp_path / 'a-file' / 'backups'}); no archive was "
        "written. Free space there or pass --output DIR."
    )
