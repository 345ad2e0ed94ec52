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
from support.plans import plan_cells, snapshot

from desbordante_ops.backup import archive, flow, targets
from desbordante_ops.backup.cluster_target import HELPER_CONTAINER, ClusterTarget, replicas_patch
from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube import Kube
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.tasks import backup as backup_tasks

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


# --- dry runs ----------------------------------------------------------------------------------


def dry_run_cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[Kube, ScalingContext]:
    """The tasks' dry runs read this fake cluster; every command they ran is recorded."""
    k = fake_cluster()
    monkeypatch.setattr(targets.reads, "connect", lambda cfg: (k, []))
    return k, ScalingContext(k)


def replicas(k: Kube) -> dict[str, int]:
    return {name: k.apps.workloads[name].replicas for name in (names.API, names.WORKER)}


@pytest.mark.usefixtures("wide_console")
def test_backup_dry_run_lists_the_commands_and_the_archive_and_runs_none(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, c = dry_run_cluster(monkeypatch)
    out = tmp_path / "backups"
    backup_tasks.backup(c, env="stage", output=str(out), dry_run=True)
    assert c.commands == [] and not out.exists()
    rows = plan_cells(capsys.readouterr().out)
    prefix = f"{kubectl_prefix(cfg)} exec"
    assert rows[0] == ("create", f"directory {out} (mode 0700)")
    assert rows[1][0] == "run" and rows[1][1].startswith(f"{prefix} postgres-0 -c postgres -- ")
    assert "pg_dump -Fc" in rows[1][1]
    assert redirected(rows[1][1], ">") == str(out / ".backup-XXXXXXXX" / archive.DATABASE)
    assert rows[2][1].startswith(f"{prefix} api-7d9f-abcde -c api -- tar -C /data/uploads ")
    action, written = rows[3]
    assert action == "write" and written.startswith(f"{out}/desbordante-stage-")
    assert "(mode 0600): archive of database.dump, uploads.tar and manifest.json" in written
    assert len(rows) == 4


@pytest.mark.usefixtures("wide_console")
def test_backup_dry_run_without_an_api_pod_plans_the_helper_job(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    k, c = dry_run_cluster(monkeypatch)
    k.apps.scale(names.API, 0)
    backup_tasks.backup(c, env="stage", output=str(tmp_path), dry_run=True)
    assert c.commands == [] and c.applied == []
    rows = plan_cells(capsys.readouterr().out)
    assert [action for action, _ in rows] == ["run", "create", "run", "run", "write"]
    assert rows[1][1].startswith("Job desbordante-stage/restore-XXXXXX (helper pod")
    assert f"exec '<pod of restore-XXXXXX>' -c {HELPER_CONTAINER} -- tar -C" in rows[2][1]
    assert rows[3][1].endswith(
        "delete job restore-XXXXXX --ignore-not-found --wait=false --cascade=background"
    )


@pytest.mark.usefixtures("wide_console")
def test_restore_dry_run_verifies_the_archive_asks_nothing_and_changes_nothing(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(cfg, tmp_path, EMPTY)  # an older schema: migrations would run
    k, c = dry_run_cluster(monkeypatch)
    before, scaled = snapshot(tmp_path), replicas(k)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked during a dry run"))
    backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before and replicas(k) == scaled
    out = capsys.readouterr().out
    assert "checksums match; schema empty database, older than the code's head 0001" in out
    rows = plan_cells(out)
    staging = tmp_path / ".restore-XXXXXXXX"
    down = [f"{kubectl_prefix(cfg)} {patch(name, 0)}" for name in ("api", "worker")]
    up = [f"{kubectl_prefix(cfg)} {patch(name, 1)}" for name in ("api", "worker")]
    assert rows[:5] == [
        ("ask", "type stage to confirm (--yes skips it)"),
        ("unpack", f"the archive's members into {staging} (removed afterwards)"),
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


def test_restore_dry_run_refuses_a_damaged_archive_like_the_restore(
    cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    data = bytearray(path.read_bytes())
    data[515] ^= 0xFF  # inside database.dump, the first member (its data follows a 512 B header)
    path.write_bytes(bytes(data))
    _, c = dry_run_cluster(monkeypatch)
    before = snapshot(tmp_path)
    with pytest.raises(Exit, match="does not match its checksum"):
        backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before
    newer = make_archive(cfg, tmp_path / "newer", {r"SELECT version_num": Result("9f3e0c\n")})
    with pytest.raises(Exit, match="newer than this code's head"):
        backup_tasks.restore(c, env="stage", archive=str(newer), dry_run=True)


@pytest.mark.usefixtures("wide_console")
def test_dry_runs_without_a_cluster_still_print_their_steps(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    missing = tmp_path / "no.kubeconfig"
    sets = [f"KUBECONFIG_PATH={missing}"]
    out = str(tmp_path / "out")
    backup_tasks.backup(
        ScalingContext(fake_cluster()), env="stage", output=out, set_=sets, dry_run=True
    )
    rows = plan_cells(capsys.readouterr().out)
    assert rows[0][0] == "unknown" and f"No kubeconfig at {missing}" in rows[0][1]
    assert [action for action, _ in rows[1:]] == ["create", "run", "run", "write"]
    backup_tasks.restore(
        ScalingContext(fake_cluster()),
        env="stage",
        archive=str(path),
        set_=sets,
        yes=True,
        dry_run=True,
    )
    rows = plan_cells(capsys.readouterr().out)
    assert rows[0][0] == "unknown" and rows[1][0] == "unpack"
    assert rows[-1] == ("run", "set api and worker back to their replicas, wait for the rollouts")
