"""Render one environment's manifests for a release: `kubectl kustomize` plus the image tag.

This is the single render path (deploy applies its output with `kubectl apply -f -`; the
manifest tests check it). It writes a throw-away kustomization on top of
`k8s/overlays/<env>` that sets the backend image with `images:` and names the migrate Job
after the release, then runs

    kubectl kustomize --load-restrictor=LoadRestrictionsNone <that directory>

The flag is needed because each overlay's configMapGenerator reads `env/<env>.env`, which
lives outside the overlay directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from invoke import Exit

from desbordante_ops import k8s_names as names
from desbordante_ops.config import REPO_ROOT, load_config

KUBECTL = "kubectl"
LOAD_RESTRICTOR = "--load-restrictor=LoadRestrictionsNone"
# The backend image's name in k8s/base; every render replaces it with IMAGE_NAME:<tag>.
BACKEND_IMAGE_PLACEHOLDER = "desbordante-backend"
# Docker's tag grammar; `latest` is refused: tags must be unique per release.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
KUSTOMIZE_TIMEOUT_SECONDS = 120


def overlay_dir(env: str, root: Path = REPO_ROOT) -> Path:
    """k8s/overlays/<env>; Exit when ENV has no overlay."""
    path = root / "k8s" / "overlays" / env
    if env not in names.KUBE_ENVS or not (path / "kustomization.yaml").is_file():
        raise Exit(f"No Kubernetes overlay for {env!r}: use one of {', '.join(names.KUBE_ENVS)}.")
    return path


def check_tag(tag: str) -> str:
    """TAG if it is a valid, release-unique image tag; Exit otherwise."""
    if not TAG_PATTERN.match(tag):
        raise Exit(f"Image tag {tag!r} is not a valid Docker tag; use e.g. a version or git sha.")
    if tag == "latest":
        raise Exit("Image tag 'latest' is not allowed: deploy a unique tag (version or git sha).")
    return tag


def kustomize(path: Path) -> str:
    """`kubectl kustomize` of the kustomization at PATH; Exit with kustomize's message on error."""
    kubectl = shutil.which(KUBECTL)
    if kubectl is None:
        raise Exit("kubectl not found on PATH: install kubectl 1.27+ (it embeds kustomize v5).")
    try:
        result = subprocess.run(
            [kubectl, "kustomize", LOAD_RESTRICTOR, str(path)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Exit(f"kubectl kustomize {path} took over {KUSTOMIZE_TIMEOUT_SECONDS}s.") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        message = lines[-1].partition(' err="')[2].rstrip('"') or lines[-1]
        raise Exit(f"kubectl kustomize {path} failed: {message}")
    return result.stdout


def release_kustomization(overlay: Path, workdir: Path, image_name: str, tag: str) -> dict:
    """The kustomization that turns OVERLAY into the release IMAGE_NAME:TAG."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay, workdir)],
        "images": [{"name": BACKEND_IMAGE_PLACEHOLDER, "newName": image_name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Job", "name": names.MIGRATE},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "replace",
                            "path": "/metadata/name",
                            "value": names.migrate_job_name(tag),
                        }
                    ]
                ),
            }
        ],
    }


@dataclass(frozen=True)
class Rendered:
    """The rendered manifests of one environment and release."""

    env: str
    namespace: str
    image: str
    migrate_job: str
    text: str
    docs: list[dict[str, Any]] = field(repr=False)

    def find(self, kind: str, name: str) -> dict[str, Any]:
        """The object KIND/NAME (KeyError when absent)."""
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"{kind}/{name}")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of KIND."""
        return [doc for doc in self.docs if doc["kind"] == kind]


def render(
    env: str, tag: str, *, image_name: str | None = None, root: Path = REPO_ROOT
) -> Rendered:
    """Render ENV's overlay for image tag TAG (IMAGE_NAME from the env's config by default)."""
    overlay = overlay_dir(env, root)
    check_tag(tag)
    image_name = image_name or load_config(env, root=root)["IMAGE_NAME"]
    with tempfile.TemporaryDirectory(prefix="desbordante-render-") as tmp:
        workdir = Path(tmp)
        layer = release_kustomization(overlay, workdir, image_name, tag)
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump(layer, sort_keys=False))
        text = kustomize(workdir)
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(
        env=env,
        namespace=names.namespace_for(env),
        image=f"{image_name}:{tag}",
        migrate_job=names.migrate_job_name(tag),
        text=text,
        docs=docs,
    )
