"""A release and a cluster for the deploy and rollback tests: rendered-like manifests (no
kubectl needed), the fake API objects with stage and prod set up, and kubectl stand-ins."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import yaml
from invoke import MockContext, Result
from kubernetes import client as k8s

from desbordante_ops.cluster import kube, names
from desbordante_ops.cluster import secrets as cs
from desbordante_ops.cluster.manifests.render import Rendered, migrate_job_name
from desbordante_ops.cluster.releases import Release, write_entry
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig, load_config
from support.fake_kube import (
    TRAEFIK_SERVED,
    FakeApps,
    FakeBatch,
    FakeClock,
    FakeCore,
    FakeDiscovery,
    FakeRollouts,
    FakeStorage,
    component_labels,
)
from support.fake_lease import FakeCoordination

SHA_TAG = "3f2a9c1"
RELEASE = "v1.4.0"
STAGE_NS, PROD_NS = "desbordante-stage", "desbordante-prod"
WORKLOADS = (*names.DEPLOYMENTS, *names.STATEFULSETS)
AUTH = {"username": "robot", "password": "s3cret-registry-token"}
LOCAL_ID = "sha256:" + "cd" * 32  # an image loaded into k3s without a registry


def stage_ran(core: FakeCore, tag: str) -> None:
    """The release ledger says stage ran TAG as the local image LOCAL_ID."""
    write_entry(core, Release(STAGE_NS, tag, f"img:{tag}", LOCAL_ID, "2026-11-20T10:00:00Z", "a"))


def running(image: str, image_id: str = LOCAL_ID) -> k8s.V1Pod:
    """A ready pod of ours running IMAGE, with the image ID the kubelet reports (the ledger
    records it)."""
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="api-running", labels={names.PART_OF_LABEL: names.APP_NAME}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="api", image=image)]),
        status=k8s.V1PodStatus(
            phase="Running",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="api", image=image, image_id=image_id, ready=True, restart_count=0
                )
            ],
        ),
    )


def pod_template(image: str, component: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": component_labels(component)},
        "spec": {"containers": [{"name": component, "image": image}]},
    }


def release(tag: str, cfg: EnvConfig) -> Rendered:
    """Rendered-like manifests: what deploy needs to see (no kubectl needed)."""
    image = f"{cfg.toolkit.IMAGE_NAME}:{tag}"
    ns = cfg.namespace
    meta = {"namespace": ns, "labels": {names.INSTANCE_LABEL: ns}}
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.MIGRATE, **meta},
        "spec": {"template": pod_template(image, names.MIGRATE)},
    }
    job["metadata"]["name"] = migrate_job_name(tag, job)
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "uploads", **meta},
            "spec": {"accessModes": ["ReadWriteOnce"]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", **meta},
            "spec": {"template": pod_template(image, names.API)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "postgres", **meta},
            "spec": {"template": pod_template(names.POSTGRES_IMAGE, names.POSTGRES)},
        },
        {
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "Middleware",
            "metadata": {"name": "upload-limit", **meta},
            "spec": {"buffering": {"maxRequestBodyBytes": 1}},
        },
        job,
    ]
    return Rendered(
        env=cfg.name,
        namespace=ns,
        image=image,
        migrate_job=job["metadata"]["name"],
        text=yaml.safe_dump_all(docs),
        docs=docs,
    )


@functools.cache
def stack_secrets() -> dict[tuple[str, str], Any]:
    """The stack's Secrets of stage and prod, generated once (bcrypt is slow on purpose)."""
    core = FakeCore()
    for env in CLUSTER_ENVS:
        cfg = load_config(env, environ={})
        cs.generate(core, FakeApps(), cfg, cfg.namespace)
    return core.secrets


def cluster(
    tag: str,
    ready: int = 1,
    job: str | None = "Complete",
    core: FakeCore | None = None,
    discovery: FakeDiscovery | None = None,
    storage: FakeStorage | None = None,
) -> kube.Kube:
    """A cluster where stage and prod have their namespaces and Secrets; the migrate Job of
    TAG (as `release` names it) ends in JOB ("missing": not there); a ready pod runs TAG."""
    core, batch = core or FakeCore(), FakeBatch()
    core.secrets.update(copy.deepcopy(stack_secrets()))
    core.pods.append(running(release(tag, load_config("stage", environ={})).image))
    for env in CLUSTER_ENVS:
        cfg = load_config(env, environ={})
        core.namespaces[cfg.namespace] = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=env))
        migrate = release(tag, cfg)
        if job != "missing" and migrate.migrate_job not in batch.states:  # one per name
            batch.create_namespaced_job(cfg.namespace, migrate.find("Job", migrate.migrate_job))
            batch.states[migrate.migrate_job] = job
    return kube.Kube(
        api_client=None,
        core=core,
        apps=FakeRollouts(dict.fromkeys(WORKLOADS, ready)),
        batch=batch,
        rbac=None,
        storage=storage or FakeStorage(),
        custom=discovery or FakeDiscovery(TRAEFIK_SERVED),
        coordination=FakeCoordination(),
    )


def kubectl_context(diff_exit: int = 1, apply_exit: int = 0) -> MockContext:
    return MockContext(
        run={
            re.compile(r"^kubectl .* diff -f \S+ --prune .*$"): Result(
                "+ image: new", exited=diff_exit
            ),
            re.compile(r"^kubectl .* apply -f \S+ --prune .*$"): Result(
                "configured", exited=apply_exit
            ),
            re.compile(r".* crictl inspecti .*"): Result(LOCAL_ID),  # the image ID in k3s
            # Not a cluster admin: Traefik's cluster-wide configuration is skipped.
            re.compile(r"^kubectl .* auth can-i .*"): Result("no", exited=1),
        },
        repeat=True,
    )


def commands(c: MockContext) -> list[str]:
    """The kubectl command lines C ran (read-only lookups: k3s, `auth can-i`, left out)."""
    lines = [call.args[0] for call in c.run.call_args_list]  # type: ignore[attr-defined]
    return [line for line in lines if line.startswith("kubectl ") and " auth can-i " not in line]


def verbs(c: MockContext) -> list[str]:
    return [cmd.split()[3] for cmd in commands(c)]


def no_wait() -> dict[str, Any]:
    return {"clock": FakeClock()}


class Spy(MockContext):
    """kubectl that records the documents of the file it applies, and applies their Jobs to
    the fake API as `kubectl apply` would (create, or patch an existing one: 422 when its
    template changes); a created Job ends in JOB."""

    # Declared on the class: Invoke's Context would otherwise keep them in its config (copies).
    k: kube.Kube | None = None
    job = "Complete"
    diff_exit = 1
    applied: list[dict[str, Any]] = []  # noqa: RUF012 - replaced per instance
    lines: list[str] = []  # noqa: RUF012 - replaced per instance

    def __init__(self, k: kube.Kube | None = None, diff_exit: int = 1, job: str = "Complete"):
        super().__init__()
        self.k, self.job = k, job
        self.applied: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.diff_exit = diff_exit

    def run(self, command: str, **kw: Any) -> Result:
        if " crictl inspecti " in command:
            return Result(LOCAL_ID)
        self.lines.append(command)
        if " diff " in command:
            return Result("", exited=self.diff_exit)
        path = command.split(" -f ")[1].split()[0]
        with open(path) as fh:
            self.applied = list(yaml.safe_load_all(fh))
        for doc in self.applied:
            if self.k is None or doc["kind"] != "Job":
                continue
            name = doc["metadata"]["name"]
            if name not in self.k.batch.states:
                self.k.batch.create_namespaced_job(doc["metadata"]["namespace"], doc)
                self.k.batch.states[name] = self.job
                continue
            try:
                self.k.batch.patch_namespaced_job(name, doc["metadata"]["namespace"], doc)
            except kube.ApiException as exc:
                return Result(stderr=str(exc.reason), exited=1)
        return Result("configured")


def stage() -> EnvConfig:
    return load_config("stage", environ={})
