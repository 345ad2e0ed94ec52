"""`deploy --dry-run` and `deploy.rollback --dry-run`: the plan from the cluster, no write.

The cluster is the fakes of tests/support (fake_release.cluster); kubectl is a MockContext that
answers `diff` only: any apply, delete or create would fail the test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, MockContext
from support.fake_release import (
    RELEASE,
    SHA_TAG,
    cluster,
    kubectl_context,
    release,
    stage_ran,
    verbs,
)

from desbordante_ops.cluster import kube, lock, names
from desbordante_ops.cluster.releases import Release, write_entry
from desbordante_ops.tasks import deploy as deploy_tasks

pytestmark = pytest.mark.usefixtures("wide_console")


def wire(monkeypatch: pytest.MonkeyPatch, k: kube.Kube) -> None:
    """The deploy tasks use the fake cluster K and the fake release's manifests."""
    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(deploy_tasks.kube, "connect", lambda cfg: k)
    monkeypatch.setattr(deploy_tasks, "render_release", lambda c, cfg, tag, **kw: release(tag, cfg))


def snapshot(k: kube.Kube) -> Any:
    """Everything the fakes hold that a write would change."""
    core: Any = k.core
    held = (core.secrets, core.config_maps, core.namespaces, k.batch.states, k.batch.created)
    return copy.deepcopy((*held, k.apps.patches))


def test_deploy_dry_run_prints_the_plan_diffs_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = cluster(SHA_TAG)
    k.batch.states[release(SHA_TAG, deploy_tasks.cluster_config("stage")).migrate_job] = "Failed"
    wire(monkeypatch, k)
    before, c = snapshot(k), kubectl_context()
    deploy_tasks.deploy(c, env="stage", tag=SHA_TAG, dry_run=True)
    assert verbs(c) == ["diff"]  # the only command: it reads
    assert snapshot(k) == before and k.coordination.holders == []  # no lock taken
    out = capsys.readouterr().out
    assert "dry run: nothing is changed" in out
    for row in (
        "take",
        f"the deploy lock (Lease desbordante-stage/{lock.LEASE})",
        "delete",  # the failed migrate Job a real run deletes first
        "with prune (the diff above)",
        "rollouts of Deployment/api",
        f"{SHA_TAG} as",
        "Traefik",
    ):
        assert row in out, row


def test_deploy_dry_run_says_what_would_stop_the_real_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = cluster(SHA_TAG)
    del k.core.secrets[("desbordante-stage", names.FlowerSecret.NAME)]
    wire(monkeypatch, k)
    with lock.held(k.coordination, "desbordante-stage", "root@server (autoupdate x)"):
        deploy_tasks.deploy(kubectl_context(diff_exit=0), env="stage", tag=SHA_TAG, dry_run=True)
    out = capsys.readouterr().out
    assert "held by root@server (autoupdate x)" in out
    assert f"{names.FlowerSecret.NAME} is absent" in out and "secrets.generate" in out
    assert "the cluster already matches the manifests" in out


def test_prod_dry_run_checks_the_gate_and_never_asks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = cluster(RELEASE)
    stage_ran(k.core, RELEASE)
    wire(monkeypatch, k)
    monkeypatch.setattr("builtins.input", lambda question: pytest.fail("a dry run asked"))
    c = kubectl_context()
    deploy_tasks.deploy(c, env="prod", tag=RELEASE, dry_run=True)
    assert verbs(c) == ["diff"]
    out = capsys.readouterr().out
    assert f"prod gate: {RELEASE} ran on stage" in out and f"type {RELEASE} to confirm" in out
    with pytest.raises(Exit, match="never ran on stage"):  # refused like the real run
        deploy_tasks.deploy(kubectl_context(), env="prod", tag="v9.9.9", dry_run=True)


def test_rollback_dry_run_names_the_target_and_runs_no_schema_check_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = cluster(SHA_TAG)
    k.apps.image = release(SHA_TAG, deploy_tasks.cluster_config("stage")).image
    for tag, when in (("0a0a0a0", "2026-11-20T10:00:00Z"), (SHA_TAG, "2026-11-21T10:00:00Z")):
        image = release(tag, deploy_tasks.cluster_config("stage")).image
        write_entry(
            k.core, Release("desbordante-stage", tag, image, "sha256:" + "ab" * 32, when, "a")
        )
    wire(monkeypatch, k)
    before, c = snapshot(k), kubectl_context()
    deploy_tasks.rollback(c, env="stage", dry_run=True)
    assert verbs(c) == ["diff"] and snapshot(k) == before  # no schema-check Job either
    out = capsys.readouterr().out
    assert f"desbordante-stage: {SHA_TAG} -> 0a0a0a0" in out
    assert "`migrate --check`" in out and "dry run: nothing is changed" in out


def test_without_a_cluster_both_dry_runs_still_print_their_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no.kubeconfig"
    monkeypatch.setenv("KUBECONFIG_PATH", str(missing))
    monkeypatch.setattr(deploy_tasks, "render_release", lambda c, cfg, tag, **kw: release(tag, cfg))
    c = MockContext()  # no command may run
    deploy_tasks.deploy(c, env="stage", tag=SHA_TAG, dry_run=True)
    deploy_tasks.rollback(c, env="stage", to="0a0a0a0", dry_run=True)
    out = capsys.readouterr().out
    assert out.count(f"No kubeconfig at {missing}") == 2
    assert "what changes needs the cluster" in out and "to 0a0a0a0" in out
