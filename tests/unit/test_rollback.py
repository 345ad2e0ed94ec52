"""deploy.rollback on the fake API server: the target from the ledger, the old image's own
`migrate --check` as a step of the plan (refusing a database migrated past it before anything
changes), then the same deploy plan as any deploy; the dry run is the plan the run executes."""

from __future__ import annotations

import pytest
from invoke import Context, Exit
from support.clock import FakeClock
from support.fakeapi.k3s import Cluster, config, prepare, rendered

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.ledger import Record, history, ledger, live_tag, write_entry
from desbordante_ops.cluster.release.rollback import (
    CHECK_PREFIX,
    UNREACHABLE,
    check_job,
    choose_target,
    schema_check,
    target,
)
from desbordante_ops.cluster.secrets.pull import PULL_SECRET
from desbordante_ops.core import plan

STAGE = "desbordante-stage"
OLD, NEW = "v1.3.0", "v1.4.0"
IMAGE = "ghcr.io/desbordante/desbordante-backend"
AHEAD = "migrate: the database is at 0002_datasets, newer than this release's head 0001_initial"


def release(k3s: Cluster, tag: str, auth: dict[str, str] | None = None) -> Release:
    options = Options(yes=True, timeout=120, registry_auth=auth, clock=FakeClock())
    return Release(Context(), config("stage"), k3s.admin, tag, rendered("stage", tag), options)


def both_deployed(k3s: Cluster) -> None:
    """OLD then NEW deployed to stage (both verified and recorded)."""
    prepare(k3s.admin, "stage")
    deploy_release(release(k3s, OLD))
    deploy_release(release(k3s, NEW))


def roll_back(k3s: Cluster, auth: dict[str, str] | None = None) -> tuple[plan.Seen, plan.Seen]:
    """The dry run and the real run of rolling stage back to the release before the live one."""
    tag, live = target(k3s.admin, config("stage"), None)
    x = release(k3s, tag, auth)
    with plan.watching() as seen:
        deploy_release(x, dry_run=True, before_apply=schema_check(live))
        deploy_release(x, before_apply=schema_check(live))
    return seen[0], seen[1]


# --- the target ------------------------------------------------------------------------------


def test_history_is_the_ledger_of_the_namespace_ordered_by_deploy_time(k3s: Cluster) -> None:
    for namespace, tag, when in (
        (STAGE, NEW, "2026-11-03"),
        (STAGE, "v1.2.0", "2026-10-01"),
        (STAGE, OLD, "2026-10-20"),
        ("desbordante-prod", "v9", "2026-10-25"),
    ):
        write_entry(k3s.admin.core, Record(namespace, tag, "i", "sha256:" + "0" * 64, when, "a"))
    assert [e.tag for e in history(k3s.admin.core, STAGE)] == ["v1.2.0", OLD, NEW]


def test_the_default_target_is_the_release_recorded_before_the_live_one() -> None:
    recorded = ["v1.2.0", OLD, NEW]
    assert choose_target(recorded, NEW, None) == OLD
    assert choose_target(recorded, OLD, None) == "v1.2.0"  # a second rollback goes further
    assert choose_target(recorded, "abc1234", None) == NEW  # live one never recorded
    assert choose_target(recorded, NEW, "v1.2.0") == "v1.2.0"


def test_nothing_earlier_or_the_live_release_itself_is_refused() -> None:
    with pytest.raises(Exit, match=r"No earlier release.*--to TAG"):
        choose_target([NEW], NEW, None)
    with pytest.raises(Exit, match="already live"):
        choose_target([OLD, NEW], NEW, NEW)


def test_the_live_tag_is_read_from_the_api_deployment(k3s: Cluster) -> None:
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, []) is None  # nothing deployed
    both_deployed(k3s)
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, []) == NEW
    assert live_tag(k3s.admin.apps, STAGE, "other/image", []) is None
    assert target(k3s.admin, config("stage"), None) == (OLD, NEW)


def test_an_image_pinned_to_a_digest_is_found_in_the_ledger(k3s: Cluster) -> None:
    both_deployed(k3s)
    pinned = f"{IMAGE}@sha256:{'ab' * 32}"
    api = k3s.server.get("Deployment", names.API, STAGE)
    assert api is not None
    api["spec"]["template"]["spec"]["containers"][0]["image"] = pinned
    k3s.server.seed(api)
    recorded = [Record(STAGE, NEW, pinned, pinned, "2026-11-03T10:00:00Z", "a")]
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, recorded) == NEW
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, []) is None


# --- the schema check -----------------------------------------------------------------------


def test_rollback_checks_the_old_schema_then_deploys_the_old_release(k3s: Cluster) -> None:
    both_deployed(k3s)
    dry, real = roll_back(k3s)
    assert dry.rows == real.rows and real.ran == real.runnable
    check = [t for a, t in real.ran if a == "run" and CHECK_PREFIX in t]
    assert check and "`migrate --check`" in check[0]
    assert ("roll back", f"{STAGE}: {NEW} -> {OLD}") in real.rows
    assert real.ran.index(("run", check[0])) < [a for a, _ in real.ran].index("apply")
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, []) == OLD
    assert not [
        j for j in k3s.server.all("Job", STAGE) if j["metadata"]["name"].startswith(CHECK_PREFIX)
    ]  # cleaned up
    assert ledger(k3s.admin.core)[f"{STAGE}.{OLD}"].verified


def test_the_check_job_is_the_old_migrate_job_running_migrate_check(k3s: Cluster) -> None:
    x = release(k3s, OLD)
    job = check_job(x.rendered, OLD)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == x.image and container["args"] == ["migrate", "--check"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    # migrate's pod labels: the NetworkPolicy lets it reach postgres
    assert job["spec"]["template"]["metadata"]["labels"][names.COMPONENT_LABEL] == names.MIGRATE
    name = job["metadata"]["name"]
    assert name.startswith("schema-check-v1-3-0-") and len(name) <= 63
    long = check_job(x.rendered, "v" * 100)["metadata"]["name"]
    assert len(long) <= 63 and long.startswith("schema-check-")


def test_a_database_past_the_old_release_refuses_before_anything_changes(k3s: Cluster) -> None:
    both_deployed(k3s)
    k3s.kubelet.behave(CHECK_PREFIX, job="fail", logs=f"{AHEAD}\n")
    applied = len(k3s.server.writes("PATCH"))
    with pytest.raises(Exit) as refused:
        roll_back(k3s)
    message = str(refused.value.message)
    assert message.startswith(f"Refusing to roll back to {OLD}: the database is migrated past")
    assert AHEAD in message and "Nothing was changed" in message
    patches = [r for r in k3s.server.writes("PATCH")[applied:] if "dryRun=All" not in r.path]
    assert patches == []  # no apply
    assert live_tag(k3s.admin.apps, STAGE, IMAGE, []) == NEW


def test_an_unreachable_database_is_not_called_a_newer_schema(k3s: Cluster) -> None:
    both_deployed(k3s)
    k3s.kubelet.behave(CHECK_PREFIX, job="fail", logs=f"migrate: {UNREACHABLE}: timeout\n")
    with pytest.raises(Exit, match=r"Cannot check the schema for v1\.3\.0: .*unreachable"):
        roll_back(k3s)


def test_an_old_image_that_is_gone_fails_fast_with_what_to_do(k3s: Cluster) -> None:
    both_deployed(k3s)
    k3s.kubelet.behave(CHECK_PREFIX, waiting="InvalidImageName", ready=False)
    with pytest.raises(Exit) as failed:
        roll_back(k3s)
    assert "cannot start: InvalidImageName" in str(failed.value.message)


def test_the_check_job_uses_the_pull_secret_of_a_private_registry(k3s: Cluster) -> None:
    both_deployed(k3s)
    seen_jobs: list[dict[str, object]] = []
    k3s.server.after_write.append(
        lambda server, kind, obj: seen_jobs.append(obj) if kind.kind == "Job" else None
    )
    roll_back(k3s, auth={"username": "robot", "password": "t0ken"})
    checks = [j for j in seen_jobs if str(j["metadata"]["name"]).startswith(CHECK_PREFIX)]  # type: ignore[index]
    assert checks
    pod_spec = checks[0]["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod_spec["imagePullSecrets"] == [{"name": PULL_SECRET}]
