"""Render one environment's manifests for a release: `kubectl kustomize` of a release layer.

This is the single render path (deploy applies its output; the manifest tests check it). A
throw-away kustomization on top of `k8s/overlays/<env>` adds what comes from the effective
settings (env file, process environment and `--set`, exactly what `invoke config` shows):
- the ConfigMap `desbordante-config` from the backend's keys only (toolkit keys such as
  IMAGE_NAME never reach a pod); its name gets a content hash, so a change rolls the pods;
- the ConfigMaps `desbordante-postgres-config` and `desbordante-rabbitmq-config`, each with
  only the keys its StatefulSet reads (names.POSTGRES_CONFIG_KEYS, RABBITMQ_CONFIG_KEYS):
  an app setting such as LOG_LEVEL never restarts the database or the broker;
- the backend image `IMAGE_NAME:<tag>` (`images:`), the namespace and replicas;
- the edge (cluster/manifests/edge.py): optional components of k8s/components, ingress hosts, TLS,
  the Traefik middleware chain of every router and the middlewares' values; with the
  component api-auth also the verify Job's basic-auth user (API_AUTH_USER);
then `kubectl kustomize` runs through the Invoke context. With an image pull Secret (see
cluster/secrets/pull.py) every pod that runs the backend image gets `imagePullSecrets`. Finally the
migrate Job is named `migrate-<tag>-<hash of its spec>` and the verify Job
`verify-<tag>-<hash of its spec>`: a Job's template is immutable, so any change of what the Job
would run (config, image, pull secret) is a new Job rather than a rejected update. The verify
Job is not among `Rendered.applied_docs`: deploy creates it after the migrate Job and the
rollouts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from invoke import Context, Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig
from desbordante_ops.core.shell import attempt, last_line
from desbordante_ops.image.refs import DIGEST_REF

KUBECTL = "kubectl"
# The backend image's name in k8s/base; every render replaces it with IMAGE_NAME:<tag>.
BACKEND_IMAGE_PLACEHOLDER = "desbordante-backend"
# Docker's tag grammar; `latest` is refused: tags must be unique per release.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
KUSTOMIZE_TIMEOUT_SECONDS = 120
# The StatefulSets' own ConfigMaps: name -> the setting keys each holds.
STATEFUL_CONFIG_MAPS: dict[str, tuple[str, ...]] = {
    names.POSTGRES_CONFIG_MAP: names.POSTGRES_CONFIG_KEYS,
    names.RABBITMQ_CONFIG_MAP: names.RABBITMQ_CONFIG_KEYS,
}
VERIFY_CONTAINER = names.VERIFY  # the verify Job's container (k8s/base/verify.yaml)
POD_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")


def overlay_dir(env: str, root: Path) -> Path:
    """k8s/overlays/<env>; Exit when ENV has no overlay."""
    path = root / "k8s" / "overlays" / env
    if env not in CLUSTER_ENVS or not (path / "kustomization.yaml").is_file():
        raise Exit(f"No Kubernetes overlay for {env!r}: use one of {', '.join(CLUSTER_ENVS)}.")
    return path


def check_docker_tag(tag: str) -> str:
    """TAG if it is a valid, release-unique image tag; Exit otherwise."""
    if not TAG_PATTERN.match(tag):
        raise Exit(f"Image tag {tag!r} is not a valid Docker tag; use e.g. a version or git sha.")
    if tag == "latest":
        raise Exit("Image tag 'latest' is not allowed: deploy a unique tag (version or git sha).")
    return tag


def kustomize(c: Context, path: Path) -> str:
    """`kubectl kustomize` of the kustomization at PATH; Exit with kustomize's message on error."""
    if shutil.which(KUBECTL) is None:
        raise Exit("kubectl not found on PATH: install kubectl 1.27+ (it embeds kustomize v5).")
    result = attempt(
        c, shlex.join([KUBECTL, "kustomize", str(path)]), timeout=KUSTOMIZE_TIMEOUT_SECONDS
    )
    if not result.ok:
        line = last_line(result)  # kustomize wraps its own message: `... err="<message>"`
        message = line.partition(' err="')[2].rstrip('"') or line
        raise Exit(f"kubectl kustomize {path} failed: {message}")
    return str(result.stdout)


def _json_patch(*ops: dict[str, Any]) -> str:
    return yaml.safe_dump(list(ops))


def _replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def release_kustomization(
    cfg: EnvConfig, overlay: Path, workdir: Path, image_name: str, tag: str, digest: str = ""
) -> dict[str, Any]:
    """The kustomization that turns OVERLAY into the release IMAGE_NAME:TAG of CFG
    (IMAGE_NAME@DIGEST when DIGEST is given)."""
    toolkit, namespace = cfg.toolkit, cfg.namespace
    labels = {
        names.PART_OF_LABEL: names.APP_NAME,
        names.INSTANCE_LABEL: namespace,
        **names.MANAGED_BY,
    }
    patches = edge.release_patches(cfg)
    if edge.restricted(cfg):  # the component api-auth added the auth file and user to verify
        patches.append(_verify_auth_user_patch(toolkit.API_AUTH_USER))
    patches += [
        {
            "target": {"kind": "Deployment", "name": name},
            "patch": _json_patch(_replace("/spec/replicas", replicas)),
        }
        for name, replicas in (
            (names.API, toolkit.API_REPLICAS),
            (names.WORKER, toolkit.WORKER_REPLICAS),
        )
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(overlay, workdir)],
        "components": edge.release_components(cfg, workdir),
        "images": [
            {
                "name": BACKEND_IMAGE_PLACEHOLDER,
                "newName": image_name,
                **({"digest": digest} if digest else {"newTag": tag}),
            }
        ],
        "configMapGenerator": [
            {"name": name, "envs": [env_file_name(name)], "options": {"labels": labels}}
            for name in (names.CONFIG_MAP, *STATEFUL_CONFIG_MAPS)
        ],
        "patches": patches,
    }


def _verify_auth_user_patch(user: str) -> dict[str, Any]:
    """A strategic-merge patch: the verify container's VERIFY_AUTH_USER is USER."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.VERIFY},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": VERIFY_CONTAINER,
                            "env": [{"name": "VERIFY_AUTH_USER", "value": user}],
                        }
                    ]
                }
            }
        },
    }
    return {"patch": yaml.safe_dump(job)}


def env_file_name(config_map: str) -> str:
    """The env file of the release layer that CONFIG_MAP is generated from."""
    return f"{config_map}.env"


def _env_file(values: dict[str, str]) -> str:
    lines = []
    for key, value in sorted(values.items()):
        if "\n" in value or "\r" in value:
            raise Exit(f"{key} contains a line break, which a ConfigMap env file cannot hold.")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def config_env_file(cfg: EnvConfig) -> str:
    """The ConfigMap's env file: the backend's keys only, as `invoke config` shows them."""
    return _env_file(cfg.backend_env())


def stateful_config_values(cfg: EnvConfig, config_map: str) -> dict[str, str]:
    """The keys of one StatefulSet's ConfigMap, with the values the app uses (the backend's
    effective settings, defaults included: RABBITMQ_VHOST is `/` when left empty)."""
    return {key: str(getattr(cfg.backend, key)) for key in STATEFUL_CONFIG_MAPS[config_map]}


def config_env_files(cfg: EnvConfig) -> dict[str, str]:
    """Env file name -> content for every ConfigMap the release layer generates."""
    files = {env_file_name(names.CONFIG_MAP): config_env_file(cfg)}
    for name in STATEFUL_CONFIG_MAPS:
        files[env_file_name(name)] = _env_file(stateful_config_values(cfg, name))
    return files


def job_spec_hash(job: dict[str, Any]) -> str:
    """8 hex digits of the Job's spec."""
    return hashlib.sha256(json.dumps(job["spec"], sort_keys=True).encode()).hexdigest()[:8]


def migrate_job_name(tag: str, job: dict[str, Any]) -> str:
    """`migrate-<tag>-<hash>`: changes whenever the Job's (immutable) spec would change."""
    return names.dns_label(names.migrate_job_name(tag), job_spec_hash(job))


def verify_job_name(tag: str, job: dict[str, Any]) -> str:
    """`verify-<tag>-<hash>`: changes whenever the Job's (immutable) spec would change."""
    return names.dns_label(names.verify_job_name(tag), job_spec_hash(job))


@dataclass(frozen=True)
class Rendered:
    """The rendered manifests of one environment and release.

    MIGRATE_JOB and VERIFY_JOB are the (hashed) names of the release's Jobs; "" when the
    manifests have no such Job.
    """

    env: str
    namespace: str
    image: str
    migrate_job: str
    text: str
    docs: list[dict[str, Any]] = field(repr=False)
    verify_job: str = ""

    @property
    def applied_docs(self) -> list[dict[str, Any]]:
        """What deploy applies: every object but the (cluster-scoped) Namespace, which is
        created through the API, and the verify Job, which deploy creates after the rollouts."""
        return [
            doc
            for doc in self.docs
            if doc["kind"] != "Namespace"
            and not (doc["kind"] == "Job" and doc["metadata"]["name"] == self.verify_job)
        ]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        """The object KIND/NAME (KeyError when absent)."""
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"{kind}/{name}")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of KIND."""
        return [doc for doc in self.docs if doc["kind"] == kind]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (a CronJob's is inside its jobTemplate); None for others."""
    if doc["kind"] not in POD_TEMPLATE_KINDS:
        return None
    workload = doc["spec"]["jobTemplate"] if doc["kind"] == "CronJob" else doc
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _runs_image(spec: dict[str, Any], image: str) -> bool:
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    return any(c.get("image") == image for c in containers)


JobNamer = Callable[[dict[str, Any]], str]


def _assemble(
    env: str,
    namespace: str,
    image: str,
    docs: list[dict[str, Any]],
    migrate: tuple[str, JobNamer],
    verify: tuple[str, JobNamer],
    pull_secret: str | None,
) -> Rendered:
    """The Rendered release: pull secret on the pods of IMAGE, then the migrate and verify Jobs
    (each given as its current name and the function naming it) renamed (after the pull secret:
    it is part of a Job's spec)."""
    for doc in docs:
        spec = _pod_spec(doc)
        if pull_secret and spec is not None and _runs_image(spec, image):
            spec["imagePullSecrets"] = [{"name": pull_secret}]

    def rename(current: str, name_job: JobNamer) -> str:
        for doc in docs:
            if current and doc["kind"] == "Job" and doc["metadata"]["name"] == current:
                new: str = name_job(doc)
                doc["metadata"]["name"] = new
                return new
        return ""

    migrate_job, verify_job = rename(*migrate), rename(*verify)
    return Rendered(
        env=env,
        namespace=namespace,
        image=image,
        migrate_job=migrate_job,
        text=yaml.safe_dump_all(docs, sort_keys=False),
        docs=docs,
        verify_job=verify_job,
    )


def _rehash(job: str) -> tuple[str, JobNamer]:
    """JOB (`<prefix>-<hash>`) and the function giving it the hash of its new spec."""
    prefix = job.rpartition("-")[0]
    return job, lambda doc: f"{prefix}-{job_spec_hash(doc)}"


def with_pull_secret(rendered: Rendered, secret: str) -> Rendered:
    """RENDERED with SECRET in `imagePullSecrets` of every pod running the backend image."""
    return _assemble(
        rendered.env,
        rendered.namespace,
        rendered.image,
        copy.deepcopy(rendered.docs),
        _rehash(rendered.migrate_job),
        _rehash(rendered.verify_job),
        secret,
    )


def render(
    c: Context,
    cfg: EnvConfig,
    tag: str,
    *,
    image_name: str | None = None,
    digest: str = "",
    pull_secret: str | None = None,
) -> Rendered:
    """Render CFG's overlay for image tag TAG (IMAGE_NAME from the settings by default).

    DIGEST (`sha256:...`) pins the backend image to IMAGE_NAME@DIGEST instead of the tag (prod
    runs exactly the image stage ran); TAG still names the release and its migrate and verify
    Jobs.
    PULL_SECRET names an image pull Secret for the pods that run the backend image.
    """
    overlay = overlay_dir(cfg.name, cfg.root)
    check_docker_tag(tag)
    image_name = image_name or cfg.toolkit.IMAGE_NAME
    with tempfile.TemporaryDirectory(prefix="desbordante-render-") as tmp:
        workdir = Path(tmp)
        layer = release_kustomization(cfg, overlay, workdir, image_name, tag, digest)
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump(layer, sort_keys=False))
        for name, text in config_env_files(cfg).items():
            (workdir / name).write_text(text)
        docs = [doc for doc in yaml.safe_load_all(kustomize(c, workdir)) if doc]
    image = f"{image_name}@{digest}" if digest else f"{image_name}:{tag}"
    return _assemble(
        cfg.name,
        cfg.namespace,
        image,
        docs,
        (names.MIGRATE, lambda job: migrate_job_name(tag, job)),
        (names.VERIFY, lambda job: verify_job_name(tag, job)),
        pull_secret,
    )


def render_as(c: Context, cfg: EnvConfig, tag: str, image: str) -> Rendered:
    """TAG rendered to run IMAGE when it is a digest reference (prod: `repo@sha256:...`),
    else IMAGE_NAME:TAG."""
    pinned = DIGEST_REF.match(image)
    if pinned is None:
        return render(c, cfg, tag)
    return render(c, cfg, tag, image_name=pinned["repo"], digest=pinned["digest"])
