"""deploy.rollback: target choice, the old image's own `migrate --check` as a one-off Job, refusal
when the database is past the old release, then an ordinary deploy of the old release.

The cluster is the in-memory fakes of the deploy tests; the check Job's outcome and its pod's
log come from FakeBatch's on_create (what the old image's `migrate --check` would print).
"""

from __future__ import annotations

from typing import Any

import pytest
from invoke import Exit
from support.fake_kube import FakeBatch, FakeClock, pod
from support.fake_release import (
    AUTH,
    LOCAL_ID,
    STAGE_NS,
    Spy,
    cluster,
    commands,
    kubectl_context,
    release,
    stage,
    verbs,
)

from desbordante_ops.cluster import kube, names, registry, rollout
from desbordante_ops.cluster import rollback as rb
from desbordante_ops.cluster.releases import Release, ledger, write_entry
from desbordante_ops.tasks import deploy as deploy_tasks

OLD, NEW = "v1.3.0", "v1.4.0"
IMAGE = "ghcr.io/desbordante/desbordante-backend"
AHEAD = "migrate: the database schema is not at the latest revision"
UNREACHABLE = "migrate: database unreachable: OperationalError"


def record(core: Any, tags_at: dict[str, str], namespace: str = STAGE_NS) -> None:
    """Ledger entries: NAMESPACE ran each tag (image `<IMAGE>:<tag>`) at the given time."""
    for tag, at in tags_at.items():
        write_entry(core, Release(namespace, tag, f"{IMAGE}:{tag}", LOCAL_ID, at, "admin"))


def checked_cluster(outcome: str | None, said: str = "", pod_state: dict[str, Any] | None = None):
    """A stage cluster where OLD's release is deployable and the schema check Job ends in
    OUTCOME, its pod having written SAID (or being stuck in POD_STATE)."""
    k = cluster(OLD)

    def on_create(name: str, body: dict[str, Any]) -> str | None:
        labels = {rollout.JOB_NAME_LABEL: name}
        k.core.pods.append(pod(f"{name}-p", labels, container=names.MIGRATE, **(pod_state or {})))
        k.core.logs[(f"{name}-p", names.MIGRATE)] = said or None
        return outcome

    batch = FakeBatch(on_create=on_create)
    batch.states, batch.bodies = k.batch.states, k.batch.bodies  # keep OLD's migrate Job
    k.batch = batch
    return k


def roll_back(k: kube.Kube, c: Any = None, **kw: Any) -> bool:
    cfg = stage()
    return rb.rollback(
        kubectl_context() if c is None else c,
        cfg,
        k,
        release(OLD, cfg),
        OLD,
        NEW,
        clock=FakeClock(),
        **kw,
    )


# --- which release --------------------------------------------------------------------------


def test_history_is_the_ledger_of_the_namespace_ordered_by_deploy_time() -> None:
    k = cluster(OLD)
    times = {NEW: "2026-11-03T10:00:00Z", "v1.2.0": "2026-10-01T10:00:00Z"}
    record(k.core, {**times, OLD: "2026-10-20T10:00:00Z"})
    record(k.core, {"v9.9.9": "2026-10-25T10:00:00Z"}, namespace="desbordante-prod")
    assert [e.tag for e in rb.history(k.core, STAGE_NS)] == ["v1.2.0", OLD, NEW]


def test_the_default_target_is_the_release_recorded_before_the_live_one() -> None:
    recorded = ["v1.2.0", OLD, NEW]
    assert rb.choose_target(recorded, NEW, None) == OLD
    assert rb.choose_target(recorded, OLD, None) == "v1.2.0"  # a second rollback goes further
    assert rb.choose_target(recorded, "abc1234", None) == NEW  # live one never recorded
    assert rb.choose_target(recorded, NEW, "v1.2.0") == "v1.2.0"


def test_nothing_earlier_or_the_live_release_itself_is_refused() -> None:
    with pytest.raises(Exit, match=r"No earlier release.*--to TAG"):
        rb.choose_target([NEW], NEW, None)
    with pytest.raises(Exit, match="already live"):
        rb.choose_target([OLD, NEW], NEW, NEW)


def test_the_live_tag_is_read_from_the_api_deployment() -> None:
    k = cluster(OLD)
    k.apps.image = f"{IMAGE}:{NEW}"
    assert rb.live_tag(k.apps, STAGE_NS, IMAGE, []) == NEW
    assert rb.live_tag(k.apps, STAGE_NS, "other/image", []) is None
    k.apps.ready = {}
    assert rb.live_tag(k.apps, STAGE_NS, IMAGE, []) is None


def test_an_image_pinned_to_a_digest_is_found_in_the_ledger() -> None:
    """Prod runs `repo@sha256:...` (the image stage ran); the ledger says which tag that is."""
    k = cluster(OLD)
    pinned = f"{IMAGE}@sha256:{'ab' * 32}"
    k.apps.image = pinned
    core = k.core
    write_entry(core, Release("desbordante-prod", NEW, pinned, pinned, "2026-11-03T10:00:00Z", "a"))
    recorded = rb.history(core, "desbordante-prod")
    assert rb.live_tag(k.apps, "desbordante-prod", IMAGE, recorded) == NEW
    assert rb.live_tag(k.apps, "desbordante-prod", IMAGE, []) is None


# --- the schema check -----------------------------------------------------------------------


def test_rollback_runs_the_old_images_migrate_check_then_deploys_the_old_release() -> None:
    k, c = checked_cluster("Complete", "migrate: the database schema is up to date"), Spy()
    assert roll_back(k, c) is True
    (name,) = [n for n in k.batch.created if n.startswith("schema-check-")]
    job = k.batch.bodies[name]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == release(OLD, stage()).image
    assert container["args"] == ["migrate", "--check"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    # migrate's pod labels: the NetworkPolicy lets it reach postgres
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[names.COMPONENT_LABEL] == names.MIGRATE
    assert name in k.batch.deleted  # cleaned up
    assert [line.split()[3] for line in c.lines] == ["diff", "apply"]
    assert ledger(k.core)[f"{STAGE_NS}.{OLD}"].image.endswith(f":{OLD}")


def test_a_database_past_the_old_release_refuses_the_rollback_before_anything_changes() -> None:
    k, c = checked_cluster("Failed", AHEAD), kubectl_context()
    with pytest.raises(Exit) as info:
        roll_back(k, c)
    message = str(str(info.value.message))
    assert message.startswith(f"Refusing to roll back to {OLD}: the database is migrated past")
    assert AHEAD in message and "Nothing was changed" in message
    assert commands(c) == []  # no diff, no apply
    assert [n for n in k.batch.deleted if n.startswith("schema-check-")]


def test_an_unreachable_database_is_not_called_a_newer_schema() -> None:
    k = checked_cluster("Failed", UNREACHABLE)
    with pytest.raises(Exit, match=r"Cannot check the schema for v1\.3\.0: .*unreachable"):
        roll_back(k)


def test_an_old_image_that_is_gone_fails_fast_with_what_to_do() -> None:
    state = {"waiting": "ImagePullBackOff", "message": "not found"}
    k, c = checked_cluster(None, pod_state=state), kubectl_context()
    with pytest.raises(Exit) as info:
        roll_back(k, c)
    message = str(str(info.value.message))
    assert "cannot start: ImagePullBackOff" in message and "invoke images.load" in message
    assert commands(c) == []


def test_the_check_job_uses_the_pull_secret_of_a_private_registry() -> None:
    k = checked_cluster("Complete")
    roll_back(k, Spy(k), registry_auth=AUTH)
    (name,) = [n for n in k.batch.created if n.startswith("schema-check-")]
    pod_spec = k.batch.bodies[name]["spec"]["template"]["spec"]
    assert pod_spec["imagePullSecrets"] == [{"name": registry.PULL_SECRET}]


def test_check_job_names_are_dns_labels() -> None:
    name = rb.check_job_name("v" * 100, "0a1b2c3d")
    assert len(name) <= 63 and name.endswith("-0a1b2c3d") and name.startswith("schema-check-")
    assert rb.check_job_name("v1.3.0", "0a1b2c3d") == "schema-check-v1-3-0-0a1b2c3d"


# --- the task -------------------------------------------------------------------------------


def test_rollback_task_goes_back_to_the_previous_release(monkeypatch: pytest.MonkeyPatch) -> None:
    k = checked_cluster("Complete")
    k.apps.image = f"{IMAGE}:{NEW}"
    record(k.core, {OLD: "2026-10-20T10:00:00Z", NEW: "2026-11-03T10:00:00Z"})
    rendered_tags: list[str] = []

    def render(c: Any, cfg: Any, tag: str, **kw: Any) -> Any:
        rendered_tags.append(tag)
        return release(tag, cfg)

    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(deploy_tasks.kube, "connect", lambda cfg: k)
    monkeypatch.setattr(deploy_tasks, "render_release", render)
    c = kubectl_context()
    deploy_tasks.rollback(c, env="stage", timeout=30)
    assert rendered_tags == [OLD]
    assert verbs(c) == ["diff", "apply"]


def test_rollback_task_refuses_a_timeout_of_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    k = checked_cluster("Complete")
    record(k.core, {OLD: "2026-10-20T10:00:00Z", NEW: "2026-11-03T10:00:00Z"})
    monkeypatch.setattr(deploy_tasks.kube, "connect", lambda cfg: k)
    monkeypatch.setattr(deploy_tasks, "render_release", lambda c, cfg, tag, **kw: release(tag, cfg))
    with pytest.raises(Exit, match="--timeout"):
        deploy_tasks.rollback(kubectl_context(), env="stage", to=OLD, timeout=0)
