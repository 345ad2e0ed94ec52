"""backup/restore/verify of a cluster environment: generated kubectl commands, their order, the
state a failure leaves, and dry runs that print the plan the real run executes (MockContext +
the in-memory cluster of tests/support/fake_cluster.py).

The PostgreSQL pipelines these commands run are exercised for real by
tests/integration/test_backup_local.py (the same command builders, without `kubectl exec`).
"""

from __future__ import annotations

import datetime as dt
import io
import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from invoke import Exit, Result
from support.fake_cluster import (
    DIGEST,
    HOST,
    IMAGE,
    TAG,
    ClusterApps,
    ClusterCore,
    ScalingContext,
)
from support.fake_kube import FakeClock
from support.plans import plan_cells, snapshot

from desbordante_ops.backup import archive, flow, targets, verify
from desbordante_ops.backup.cluster_target import HELPER_CONTAINER, ClusterTarget, replicas_patch
from desbordante_ops.cluster import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.core import plan
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.tasks import backup as backup_tasks

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


def fake_cluster() -> Kube:
    """support.fake_cluster's in-memory namespace (ClusterCore, ClusterApps at HOST), built
    with every field of the current Kube (the APIs backup does not use stay None)."""
    core = ClusterCore()
    api_client = SimpleNamespace(configuration=SimpleNamespace(host=HOST))
    unused: dict[str, Any] = dict.fromkeys(Kube.__dataclass_fields__)
    return Kube(**{**unused, "api_client": api_client, "core": core, "apps": ClusterApps(core)})


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
    c = ScalingContext(k, {**results, **COUNTED}, OUTPUTS)
    return flow.backup(target(c, cfg, k), directory)


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
    c = ScalingContext(k, {**REVISION, **COUNTED}, OUTPUTS)
    path = flow.backup(target(c, cfg, k), tmp_path)
    revision, dump, tar, count = c.commands
    prefix = f"{kubectl_prefix(cfg)} exec"
    assert revision.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert dump.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert 'pg_dump -Fc --no-password -U "$POSTGRES_USER" -d "$POSTGRES_DB"' in dump
    assert redirected(dump, ">").endswith(f"/{archive.DATABASE}")  # binary: shell to a file
    assert tar.startswith(f"{prefix} api-7d9f-abcde -c api -- tar -C /data/uploads ")
    assert "--exclude=incoming" in tar and redirected(tar, ">").endswith(f"/{archive.UPLOADS}")
    # The rows are counted in the dump itself, by the pod's pg_restore (the dump on stdin).
    assert count.startswith(f"{prefix} -i postgres-0 -c postgres -- bash -c ")
    assert "pg_restore --data-only -f - | awk" in count
    assert redirected(count, "<") == redirected(dump, ">")
    manifest = archive.read_manifest(path)
    assert (manifest.env, manifest.release, manifest.schema_revision) == ("stage", TAG, "0001")
    assert manifest.image == f"{IMAGE}@{DIGEST[:19]}"  # short_id: 12 hex digits
    assert manifest.source == f"namespace desbordante-stage on {HOST}"
    assert manifest.row_counts == COUNTS
    with tarfile.open(path) as outer:
        assert outer.extractfile(archive.DATABASE).read() == DUMP  # type: ignore[union-attr]
        assert outer.extractfile(archive.UPLOADS).read() == uploads_tar()  # type: ignore[union-attr]
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # staging removed


def test_backup_without_a_running_api_pod_tars_in_a_helper_pod_then_removes_it(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    k = fake_cluster()
    k.apps.scale(names.API, 0)
    c = ScalingContext(k, REVISION, OUTPUTS)
    flow.backup(target(c, cfg, k), tmp_path)
    apply, tar, delete = (position(c.commands, s) for s in (" apply -f ", " tar -C ", "delete job"))
    assert apply < tar < delete < position(c.commands, "pg_restore --data-only")
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


# --- verification ------------------------------------------------------------------------------


def scratch_of(command: str) -> str:
    """The scratch database a CREATE/DROP DATABASE command names."""
    found = command.split('DATABASE IF EXISTS "' if "DROP" in command else 'DATABASE "')[1]
    return found.split('"')[0]


@pytest.mark.usefixtures("wide_console")
def test_backup_verify_restores_into_a_scratch_database_in_the_pod_and_drops_it(
    cfg: EnvConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = fake_cluster()
    c = ScalingContext(k, {**REVISION, **COUNTED, **SCRATCH_COUNTS}, OUTPUTS)
    path = flow.backup(target(c, cfg, k), tmp_path, verify_it=True)
    create, restore, count, drop = c.commands[-4:]
    prefix = f"{kubectl_prefix(cfg)} exec"
    scratch = scratch_of(create)
    assert scratch.startswith(f"{cfg.backend.POSTGRES_DB}_verify_") and len(scratch) <= 63
    assert create.startswith(f"{prefix} postgres-0 -c postgres -- bash -c ")
    assert '-U "$POSTGRES_USER" -d postgres' in create and "TEMPLATE template0" in create
    assert restore.startswith(f"{prefix} -i postgres-0 -c postgres -- bash -c ")
    assert f'-U "$POSTGRES_USER" -d {scratch}' in restore and "pg_restore --no-owner" in restore
    assert redirected(restore, "<") == str(tmp_path / f".{path.name}.verify" / archive.DATABASE)
    assert f"-d {scratch} -c " in count and "FROM public.profiling_tasks ORDER BY 1" in count
    assert "DROP DATABASE IF EXISTS" in drop and scratch_of(drop) == scratch
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
    cfg: EnvConfig, tmp_path: Path, failing: dict[str, Result], message: str
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    c = ScalingContext(k, {**SCRATCH_COUNTS, **failing})
    with pytest.raises(Exit) as raised:
        plan.execute(verify.verify_plan(target(c, cfg, k), path))
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
    plan.execute(verify.verify_plan(target(ScalingContext(k, SCRATCH_COUNTS), cfg, k), unverified))
    assert path.is_file() and not unverified.exists()


def test_a_scratch_database_that_cannot_be_created_leaves_the_archive_named_as_it_was(
    cfg: EnvConfig, tmp_path: Path
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    k = fake_cluster()
    denied = Result(stderr="ERROR:  permission denied to create database", exited=1)
    c = ScalingContext(k, {"CREATE DATABASE": denied})
    with pytest.raises(Exit) as raised:
        plan.execute(verify.verify_plan(target(c, cfg, k), path))
    assert str(raised.value.message) == (
        f"Verification of {path.name} failed while creating the scratch database: psql in the "
        "postgres pod: ERROR:  permission denied to create database. The archive was not "
        f"verified (its name is unchanged); run `invoke backup --verify {path}` again once that "
        "is fixed."
    )
    assert path.is_file() and not any("pg_restore" in cmd for cmd in c.commands)
    assert "DROP DATABASE IF EXISTS" in c.commands[-1]  # whatever happens


def test_an_archive_without_row_counts_cannot_be_verified(
    cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    with tarfile.open(path) as tar:
        staged = tmp_path / "staged"
        tar.extractall(staged, filter="data")
    older = archive.read_manifest(path).model_copy(update={"row_counts": None, "members": {}})
    members = {name: staged / name for name in archive.MEMBERS}
    archive.write_archive(path, older, members)
    _, c = dry_run_cluster(monkeypatch)
    for dry_run in (True, False):
        with pytest.raises(Exit) as raised:
            backup_tasks.backup(c, env="stage", verify=str(path), dry_run=dry_run)
        assert str(raised.value.message) == (
            f"{path.name} records no row counts (an archive of an older toolkit), so its restore "
            "cannot be compared with them; take a new backup (`invoke backup --verify`)."
        )
    assert c.commands == []


# --- dry runs ----------------------------------------------------------------------------------


def dry_run_cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[Kube, ScalingContext]:
    """The tasks read this fake cluster; every command they ran is recorded."""
    k = fake_cluster()
    monkeypatch.setattr(targets.client, "connect", lambda cfg: k)
    return k, ScalingContext(k, {**REVISION, **COUNTED, **SCRATCH_COUNTS}, OUTPUTS)


def replicas(k: Kube) -> dict[str, int]:
    return {name: k.apps.workloads[name].replicas for name in (names.API, names.WORKER)}


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
    action, staging = rows[1]
    assert action == "create" and staging.startswith(f"directory {out}/.desbordante-stage-")
    assert rows[2][0] == "read" and "SELECT version_num FROM alembic_version" in rows[2][1]
    assert rows[3][0] == "run" and rows[3][1].startswith(f"{prefix} postgres-0 -c postgres -- ")
    assert "pg_dump -Fc" in rows[3][1]
    dump = Path(redirected(rows[3][1], ">"))
    assert dump.name == archive.DATABASE and staging.startswith(f"directory {dump.parent} ")
    assert rows[4][1].startswith(f"{prefix} api-7d9f-abcde -c api -- tar -C /data/uploads ")
    assert "pg_restore --data-only" in rows[5][1] and redirected(rows[5][1], "<") == str(dump)
    action, written = rows[6]
    assert action == "write" and written.startswith(f"{out}/desbordante-stage-")
    assert "(mode 0600): archive of database.dump, uploads.tar and manifest.json" in written
    assert len(rows) == 7


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
    assert rows[3][1].startswith("Job desbordante-stage/restore-XXXXXX (helper pod")
    assert f"exec '<pod of restore-XXXXXX>' -c {HELPER_CONTAINER} -- tar -C" in rows[4][1]
    assert rows[5][1].endswith(
        "delete job restore-XXXXXX --ignore-not-found --wait=false --cascade=background"
    )


@pytest.mark.usefixtures("wide_console", "frozen")
@pytest.mark.parametrize("api_runs", [True, False])
def test_backup_with_verify_runs_the_plan_its_dry_run_printed(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    built: list[plan.Plan],
    api_runs: bool,
) -> None:
    k, c = dry_run_cluster(monkeypatch)
    if not api_runs:
        k.apps.scale(names.API, 0)  # the files come through the helper Job
    out = tmp_path / "backups"
    with plan.watching() as seen:
        backup_tasks.backup(c, env="stage", output=str(out), verify=True, dry_run=True)
        assert c.commands == [] and not out.exists()
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
    assert [p.metadata.name for p in k.core.pods if p.metadata.name.startswith("restore-")] == []


@pytest.mark.usefixtures("wide_console", "frozen")
def test_verify_of_an_archive_runs_the_plan_its_dry_run_printed(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built: list[plan.Plan],
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    _, c = dry_run_cluster(monkeypatch)
    with plan.watching() as seen:
        backup_tasks.backup(c, env="stage", verify=str(path), dry_run=True)
        assert c.commands == []
        backup_tasks.backup(c, env="stage", verify=str(path))
    assert_same_plan(seen, built)
    assert seen[0].title == f"verification of {path.name} on namespace desbordante-stage on {HOST}"
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
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(cfg, tmp_path, EMPTY)  # an older schema: migrations would run
    k, c = dry_run_cluster(monkeypatch)
    before, scaled = snapshot(tmp_path), replicas(k)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked during a dry run"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before and replicas(k) == scaled
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
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built: list[plan.Plan],
    schema: str,
) -> None:
    path = make_archive(cfg, tmp_path, REVISION if schema == "head" else EMPTY)
    k, c = dry_run_cluster(monkeypatch)
    with plan.watching() as seen:
        backup_tasks.restore(c, env="stage", archive=str(path), yes=True, dry_run=True)
        assert c.commands == [] and replicas(k) == {names.API: 1, names.WORKER: 1}
        backup_tasks.restore(c, env="stage", archive=str(path), yes=True)
    assert_same_plan(seen, built)
    assert seen[0].rows[0][0] == "unpack"  # --yes: nothing to ask
    assert any("pg_restore" in command for command in c.commands)
    assert ("migrate" in " ".join(c.commands)) == (schema == "older")
    assert replicas(k) == {names.API: 1, names.WORKER: 1}
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # staging removed


def test_restore_dry_run_refuses_a_damaged_archive_like_the_restore(
    cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    data = bytearray(path.read_bytes())
    data[515] ^= 0xFF  # inside database.dump, the first member (its data follows a 512 B header)
    path.write_bytes(bytes(data))
    _, c = dry_run_cluster(monkeypatch)
    before = snapshot(tmp_path)
    for dry_run in (True, False):
        with pytest.raises(Exit, match="does not match its checksum"):
            backup_tasks.restore(c, env="stage", archive=str(path), yes=True, dry_run=dry_run)
    with pytest.raises(Exit, match="does not match its checksum"):
        backup_tasks.backup(c, env="stage", verify=str(path), dry_run=True)
    assert c.commands == [] and snapshot(tmp_path) == before
    newer = make_archive(cfg, tmp_path / "newer", {r"SELECT version_num": Result("9f3e0c\n")})
    with pytest.raises(Exit, match="newer than this code's head"):
        backup_tasks.restore(c, env="stage", archive=str(newer), dry_run=True)


@pytest.mark.usefixtures("wide_console")
def test_without_a_cluster_dry_runs_print_their_steps_and_real_runs_refuse(
    cfg: EnvConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    missing = tmp_path / "no.kubeconfig"
    sets = [f"KUBECONFIG_PATH={missing}"]
    out = str(tmp_path / "out")
    c = ScalingContext(fake_cluster())
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
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name, "no.kubeconfig"][:1]


def test_a_restore_without_a_terminal_refuses_before_any_step(
    cfg: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_archive(cfg, tmp_path, REVISION)
    _, c = dry_run_cluster(monkeypatch)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    backup_tasks.restore(c, env="stage", archive=str(path), dry_run=True)  # prints, exits 0
    with pytest.raises(Exit, match=r"^No terminal to confirm on; nothing was changed\. Pass"):
        backup_tasks.restore(c, env="stage", archive=str(path))
    assert c.commands == []


@pytest.mark.usefixtures("wide_console")
def test_a_postgres_pod_that_does_not_run_is_one_unknown_row_and_the_real_run_refuses(
    cfg: EnvConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    k, c = dry_run_cluster(monkeypatch)
    k.core.pods = [p for p in k.core.pods if p.metadata.name != "postgres-0"]
    out = str(tmp_path / "out")
    backup_tasks.backup(c, env="stage", output=out, verify=True, dry_run=True)
    rows = plan_cells(capsys.readouterr().out)
    unknowns = [target for action, target in rows if action == "unknown"]
    assert len(unknowns) == 1 and unknowns[0].startswith("the postgres pod: ")
    with pytest.raises(Exit) as raised:
        backup_tasks.backup(c, env="stage", output=out, verify=True)
    assert str(raised.value.message) == f"Cannot go on: {unknowns[0]}."
    assert c.commands == [] and not Path(out).exists()
