"""render.py: one `kubectl kustomize` path, the release tag and the per-release Jobs."""

from __future__ import annotations

import re

import pytest
import yaml
from invoke import Context, Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.render import (
    BACKEND_IMAGE_PLACEHOLDER,
    Rendered,
    job_spec_hash,
    kustomize,
    overlay_dir,
    with_pull_secret,
)
from desbordante_ops.core.settings import REPO_ROOT
from desbordante_ops.tasks import deploy as deploy_tasks

from .kube_objects import TEST_TAG, containers, pod_spec, render_env, workloads


def backend_images(rendered: Rendered) -> set[str]:
    return {
        c["image"]
        for w in workloads(rendered.docs)
        for c in containers(pod_spec(w))
        if c["image"] not in (names.POSTGRES_IMAGE, names.RABBITMQ_IMAGE)
    }


def test_release_image_is_set_on_every_backend_container(rendered: Rendered) -> None:
    assert backend_images(rendered) == {f"ghcr.io/desbordante/desbordante-backend:{TEST_TAG}"}
    assert rendered.image == f"ghcr.io/desbordante/desbordante-backend:{TEST_TAG}"


def test_image_name_can_be_overridden() -> None:
    out = render_env("stage", "abc1234", image_name="127.0.0.1:5000/desbordante-backend")
    assert backend_images(out) == {"127.0.0.1:5000/desbordante-backend:abc1234"}


def test_migrate_and_verify_jobs_are_named_per_release_and_spec(rendered: Rendered) -> None:
    jobs = {j["metadata"]["name"]: j for j in rendered.of_kind("Job")}
    assert set(jobs) == {rendered.migrate_job, rendered.verify_job}
    assert re.fullmatch(r"migrate-1-2-3-rc-1-[0-9a-f]{8}", rendered.migrate_job)
    assert re.fullmatch(r"verify-1-2-3-rc-1-[0-9a-f]{8}", rendered.verify_job)
    assert pod_spec(jobs[rendered.migrate_job])["containers"][0]["args"] == ["migrate"]
    assert pod_spec(jobs[rendered.verify_job])["containers"][0]["args"] == ["verify"]
    for name, job in jobs.items():
        assert name.endswith("-" + job_spec_hash(job))


def test_two_releases_get_different_migrate_and_verify_jobs() -> None:
    first, second = render_env("prod", "2.0.0"), render_env("prod", "2.0.1")
    assert first.migrate_job != second.migrate_job
    assert first.verify_job != second.verify_job


def test_a_change_of_the_verify_jobs_spec_gets_a_new_verify_job() -> None:
    """The basic-auth user is part of the verify Job's (immutable) template."""
    first = render_env("stage", "v0.2.0")
    assert render_env("stage", "v0.2.0").verify_job == first.verify_job
    other_user = render_env("stage", "v0.2.0", flags={"API_AUTH_USER": "alice"})
    assert other_user.verify_job != first.verify_job
    assert other_user.verify_job.startswith("verify-v0-2-0-")


def test_a_config_change_of_the_same_release_gets_a_new_migrate_job() -> None:
    """A Job's template is immutable: the same name with a new ConfigMap would be refused
    ("spec.template: field is immutable") on the second deploy of a tag."""
    first = render_env("stage", "v0.2.0")
    again = render_env("stage", "v0.2.0")
    changed = render_env("stage", "v0.2.0", flags={"LOG_LEVEL": "DEBUG"})
    assert first.migrate_job == again.migrate_job  # a redeploy of nothing new changes nothing
    assert changed.migrate_job != first.migrate_job
    assert changed.migrate_job.startswith("migrate-v0-2-0-")


def test_namespace_and_every_namespaced_object_match_the_names_module(rendered: Rendered) -> None:
    namespace = f"desbordante-{rendered.env}"
    assert rendered.namespace == namespace
    assert [n["metadata"]["name"] for n in rendered.of_kind("Namespace")] == [namespace]
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


@pytest.mark.parametrize("tag", ["latest", "", "-bad", "has space", "x" * 129])
def test_unusable_tags_are_refused(tag: str) -> None:
    with pytest.raises(Exit):
        render_env("stage", tag)


@pytest.mark.parametrize("env", ["local", "dev", "../base"])
def test_environments_without_overlay_are_refused(env: str) -> None:
    with pytest.raises(Exit):
        overlay_dir(env, REPO_ROOT)


def test_raw_overlay_keeps_the_placeholder_image_so_only_render_deploys() -> None:
    docs = [
        d for d in yaml.safe_load_all(kustomize(Context(), overlay_dir("stage", REPO_ROOT))) if d
    ]
    images = {c["image"] for w in workloads(docs) for c in containers(pod_spec(w))}
    assert BACKEND_IMAGE_PLACEHOLDER in images


def test_kustomize_errors_become_one_clear_exit(tmp_path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(Exit, match=r"kubectl kustomize .* failed"):
        kustomize(Context(), tmp_path)


def test_migrate_and_verify_job_names_are_dns_labels() -> None:
    long_tag = render_env("stage", "v" * 120)
    assert len(long_tag.migrate_job) <= 63 and len(long_tag.verify_job) <= 63
    assert names.verify_job_name("1.4.0") == "verify-1-4-0"
    assert names.migrate_job_name("1.4.0") == "migrate-1-4-0"
    assert names.migrate_job_name("Sha_ABC") == "migrate-sha-abc"
    long = names.migrate_job_name("v" * 200)
    assert len(long) <= 63 and not long.endswith("-")
    with pytest.raises(ValueError):
        names.migrate_job_name("...")


def test_a_pull_secret_reaches_every_pod_of_the_backend_image_only() -> None:
    plain = render_env("stage")
    secret = render_env("stage", pull_secret="desbordante-registry")
    for w in workloads(secret.docs):
        spec = pod_spec(w)
        runs_backend = any(c["image"] == secret.image for c in containers(spec))
        wanted = [{"name": "desbordante-registry"}] if runs_backend else None
        assert spec.get("imagePullSecrets") == wanted, w["metadata"]["name"]
    with_secret = {
        w["metadata"]["name"] for w in workloads(secret.docs) if "imagePullSecrets" in pod_spec(w)
    }
    assert with_secret == {
        "api",
        "worker",
        "flower",
        "retention",
        secret.migrate_job,
        secret.verify_job,
    }
    # the Jobs' templates changed, so they are new Jobs (templates are immutable)
    assert secret.migrate_job != plain.migrate_job
    assert secret.verify_job != plain.verify_job
    again = with_pull_secret(plain, "desbordante-registry")
    assert again.docs == secret.docs
    assert (again.migrate_job, again.verify_job) == (secret.migrate_job, secret.verify_job)
    assert {d["metadata"]["name"] for d in secret.applied_docs if d["kind"] == "Job"} == {
        secret.migrate_job
    }


def test_deploy_render_shows_the_pull_secret_when_registry_credentials_are_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret-registry-token")
    deploy_tasks.render(Context(), env="stage", tag="abc1234")
    out = capsys.readouterr().out
    assert "imagePullSecrets" in out and "desbordante-registry" in out
    assert "s3cret-registry-token" not in out
