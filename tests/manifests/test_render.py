"""render.py: one `kubectl kustomize` path, the release tag and the per-release migrate Job."""

from __future__ import annotations

import pytest
import yaml
from invoke import Exit

from desbordante_ops import k8s_names as names
from desbordante_ops.render import (
    BACKEND_IMAGE_PLACEHOLDER,
    Rendered,
    kustomize,
    overlay_dir,
    render,
)

from .kube_objects import TEST_TAG, containers, pod_spec, workloads


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
    out = render("stage", "abc1234", image_name="127.0.0.1:5000/desbordante-backend")
    assert backend_images(out) == {"127.0.0.1:5000/desbordante-backend:abc1234"}


def test_migrate_job_is_named_per_release(rendered: Rendered) -> None:
    jobs = rendered.of_kind("Job")
    assert [j["metadata"]["name"] for j in jobs] == ["migrate-1-2-3-rc-1"]
    assert rendered.migrate_job == names.migrate_job_name(TEST_TAG) == "migrate-1-2-3-rc-1"
    assert pod_spec(jobs[0])["containers"][0]["args"] == ["migrate"]


def test_two_releases_get_different_migrate_jobs() -> None:
    assert render("prod", "2.0.0").migrate_job != render("prod", "2.0.1").migrate_job


def test_namespace_and_every_namespaced_object_match_k8s_names(rendered: Rendered) -> None:
    namespace = names.namespace_for(rendered.env)
    assert rendered.namespace == namespace
    assert [n["metadata"]["name"] for n in rendered.of_kind("Namespace")] == [namespace]
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


@pytest.mark.parametrize("tag", ["latest", "", "-bad", "has space", "x" * 129])
def test_unusable_tags_are_refused(tag: str) -> None:
    with pytest.raises(Exit):
        render("stage", tag)


@pytest.mark.parametrize("env", ["local", "dev", "../base"])
def test_environments_without_overlay_are_refused(env: str) -> None:
    with pytest.raises(Exit):
        overlay_dir(env)


def test_raw_overlay_keeps_the_placeholder_image_so_only_render_deploys() -> None:
    docs = [d for d in yaml.safe_load_all(kustomize(overlay_dir("stage"))) if d]
    images = {c["image"] for w in workloads(docs) for c in containers(pod_spec(w))}
    assert BACKEND_IMAGE_PLACEHOLDER in images


def test_kustomize_errors_become_one_clear_exit(tmp_path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(Exit, match=r"kubectl kustomize .* failed"):
        kustomize(tmp_path)


def test_migrate_job_names_are_dns_labels() -> None:
    assert names.migrate_job_name("1.4.0") == "migrate-1-4-0"
    assert names.migrate_job_name("Sha_ABC") == "migrate-sha-abc"
    long = names.migrate_job_name("v" * 200)
    assert len(long) <= 63 and not long.endswith("-")
    with pytest.raises(ValueError):
        names.migrate_job_name("...")
