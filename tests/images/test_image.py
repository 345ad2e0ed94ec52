"""The built image itself: user, labels, entry point, health check, contents and size."""

from __future__ import annotations

from datetime import datetime

import docker
import pytest
from invoke import Context

from desbordante_ops.core.settings import REPO_ROOT
from desbordante_ops.image import build as images
from desbordante_ops.image import inspect as image_inspect
from desbordante_ops.image import tags as imagetags

from .conftest import TEST_IMAGE

ROLES = ("api", "worker", "flower", "migrate", "retention")
SIZE_BUDGET_MB = 300  # debootstrap base (~123 MB) + dependencies (~107 MB) + app


def run(client: docker.DockerClient, ref: str, command: list[str], **kwargs) -> tuple[int, str]:
    """Run COMMAND in a throwaway container without network; (exit code, stdout+stderr)."""
    container = client.containers.run(ref, command, detach=True, network_mode="none", **kwargs)
    try:
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def test_tags_follow_the_git_revision(built: images.BuildResult) -> None:
    rev = imagetags.revision(Context(), REPO_ROOT)
    assert built.refs == [f"{TEST_IMAGE}:{tag}" for tag in rev.tags]


def test_runs_as_fixed_numeric_non_root_user(docker_client, built) -> None:
    info = image_inspect.describe(docker_client, built.image_id)
    uid, _, gid = info["user"].partition(":")
    assert uid.isdigit() and int(uid) >= 10000, info["user"]
    code, out = run(
        docker_client,
        built.image_id,
        ["-c", "import os; print(os.getuid(), os.getgid())"],
        entrypoint=["python3"],
    )
    assert code == 0
    assert out.split() == [uid, gid or uid]


def test_oci_labels_name_source_revision_version_created(docker_client, built) -> None:
    labels = image_inspect.describe(docker_client, built.image_id)["labels"]
    rev = imagetags.revision(Context(), REPO_ROOT)
    assert labels["org.opencontainers.image.revision"] == rev.sha
    assert labels["org.opencontainers.image.version"] == rev.version
    assert labels["org.opencontainers.image.source"].startswith("https://")
    created = datetime.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    assert created.year >= 2026


def test_exec_form_entry_point_and_environment(docker_client, built) -> None:
    info = image_inspect.describe(docker_client, built.image_id)
    assert info["entrypoint"] == ["/opt/app/bin/desbordante-service"]
    assert info["cmd"] == ["api"]
    assert info["env"]["PYTHONUNBUFFERED"] == "1"
    assert info["healthcheck"][0] == "CMD"
    assert "healthcheck.py" in info["healthcheck"][-1]


@pytest.mark.parametrize("role", ROLES)
def test_entry_point_dispatches_each_role(docker_client, built, role: str) -> None:
    code, out = run(docker_client, built.image_id, [role, "--help"])
    assert code == 0, out
    assert f"usage: desbordante-service {role}" in out


@pytest.mark.parametrize("role", ROLES)
def test_role_without_settings_exits_2_naming_the_variable(docker_client, built, role: str) -> None:
    code, out = run(docker_client, built.image_id, [role])
    assert code == 2, out
    assert out.strip() == (
        "configuration error: RABBITMQ_DEFAULT_USER: required environment variable is not set"
    )


def test_unknown_role_is_refused(docker_client, built) -> None:
    code, out = run(docker_client, built.image_id, ["shell"])
    assert code == 2
    assert "invalid choice" in out


def test_no_build_tools_or_pip_in_the_runtime(docker_client, built) -> None:
    script = (
        "import importlib.util, shutil; "
        "tools = [t for t in ('gcc', 'cc', 'c++', 'make', 'pip', 'pip3') if shutil.which(t)]; "
        "mods = [m for m in ('pip', 'setuptools') if importlib.util.find_spec(m)]; "
        "print(tools + mods)"
    )
    code, out = run(docker_client, built.image_id, ["-c", script], entrypoint=["python3"])
    assert code == 0, out
    assert out.strip() == "[]"


def test_uploads_directory_is_writable_by_the_user_and_code_is_not(docker_client, built) -> None:
    script = (
        "import os; "
        "print(os.access(os.environ['UPLOADED_FILES_DIR_PATH'], os.W_OK), "
        "os.access('/opt/venv/lib', os.W_OK), os.access('/opt/app', os.W_OK))"
    )
    code, out = run(docker_client, built.image_id, ["-c", script], entrypoint=["python3"])
    assert code == 0, out
    assert out.split() == ["True", "False", "False"]


def test_image_size_is_reported_and_within_budget(docker_client, built, capsys) -> None:
    size_mb = built.size / 1e6
    layers = list(image_inspect.layers(docker_client, built.image_id))
    with capsys.disabled():
        print(f"\nimage size: {size_mb:.1f} MB ({len(layers)} history entries)")
        for instruction, size in layers:
            if size > 100_000:
                print(f"  {size / 1e6:7.1f} MB  {instruction}")
    assert size_mb < SIZE_BUDGET_MB


def test_context_leaves_out_git_venvs_caches_and_secrets() -> None:
    from docker.utils.build import exclude_paths

    patterns = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p for p in patterns if p.strip() and not p.startswith("#")]
    sent = exclude_paths(str(REPO_ROOT), patterns, dockerfile=images.DOCKERFILE)
    assert "backend/pyproject.toml" in sent
    assert images.DOCKERFILE in sent
    for path in sent:
        top = path.split("/", 1)[0]
        assert top in ("backend", "images", "wheelhouse", ".dockerignore"), path
        assert "__pycache__" not in path and ".egg-info" not in path, path
