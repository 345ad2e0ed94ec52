"""The image pull Secret `desbordante-registry` for a private registry (e.g. GHCR).

With REGISTRY_USERNAME and REGISTRY_PASSWORD (or REGISTRY_PASSWORD_FILE) set — the same
credentials `invoke images.push` uses — deploy creates or updates a Secret of type
kubernetes.io/dockerconfigjson for the registry of IMAGE_NAME, through the API only (never
printed, logged, written to a file or put on a command line), and the rendered pods that run
the backend image reference it in `imagePullSecrets`. Without credentials an existing Secret is
kept and still referenced (a deploy from another machine does not drop it).
"""

from __future__ import annotations

import base64
import json

from invoke import Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.core.console import ok
from desbordante_ops.image.refs import repository_path

PULL_SECRET = "desbordante-registry"  # noqa: S105 - a Secret name
SECRET_TYPE = "kubernetes.io/dockerconfigjson"  # noqa: S105 - a Secret type
CONFIG_KEY = ".dockerconfigjson"
DOCKER_HUB = "https://index.docker.io/v1/"


def registry_of(image: str) -> str:
    """The registry host of IMAGE as a docker config `auths` key (Docker Hub's URL for none)."""
    path = repository_path(image)
    return image[: -len(path) - 1] if path != image else DOCKER_HUB


def docker_config(registry: str, auth: dict[str, str]) -> str:
    """The `.dockerconfigjson` content for AUTH (username, password) at REGISTRY."""
    user, password = auth["username"], auth["password"]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    entry = {"username": user, "password": password, "auth": token}
    return json.dumps({"auths": {registry: entry}}, sort_keys=True)


def _stored(secret: k8s.V1Secret) -> str:
    raw = (secret.data or {}).get(CONFIG_KEY, "")
    return base64.b64decode(raw).decode() if raw else ""


def ensure_pull_secret(
    core: k8s.CoreV1Api, namespace: str, image: str, auth: dict[str, str] | None
) -> str | None:
    """Create/update the pull Secret from AUTH; its name when it exists afterwards, else None."""
    existing = read_or_none(core.read_namespaced_secret, PULL_SECRET, namespace)
    if auth is None:
        return PULL_SECRET if existing is not None else None
    if existing is not None and existing.type != SECRET_TYPE:
        raise Exit(
            f"Secret {namespace}/{PULL_SECRET} has type {existing.type}, not {SECRET_TYPE}; "
            f"delete it (`kubectl -n {namespace} delete secret {PULL_SECRET}`) and deploy again."
        )
    wanted = docker_config(registry_of(image), auth)
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=PULL_SECRET, labels=dict(names.CREATED_LABELS)),
        type=SECRET_TYPE,
        string_data={CONFIG_KEY: wanted},
    )
    if existing is None:
        core.create_namespaced_secret(namespace, body)
        ok(f"image pull Secret {PULL_SECRET} created for {registry_of(image)}")
    elif _stored(existing) != wanted:
        core.patch_namespaced_secret(PULL_SECRET, namespace, body)
        ok(f"image pull Secret {PULL_SECRET} updated for {registry_of(image)}")
    return PULL_SECRET
