"""From a bare server to a verified stack, step by step; every step idempotent.

doctor -> k3s.install -> namespace -> secrets.generate -> images.build -> images.load (or push)
-> deploy -> smoke test through the ingress (upload, create a task, poll its result) -> table
of URLs and where the credentials are. Each step reports whether it changed anything, so a
second run says "nothing changed". A dry run prints the plan and touches nothing (no root,
cluster, k3s or Docker needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from docker.errors import DockerException
from invoke import Context, Exit

from desbordante_ops.cluster import k3s, kube, lock, names
from desbordante_ops.cluster.checks import server_checks
from desbordante_ops.cluster.deploy import ROLLOUT_TIMEOUT_SECONDS, deploy_release
from desbordante_ops.cluster.manifests import edge, traefik
from desbordante_ops.cluster.manifests.render import render
from desbordante_ops.cluster.secrets import ensure_secrets
from desbordante_ops.core.checks import print_report, run_checks
from desbordante_ops.core.console import ok, print_table, step
from desbordante_ops.core.plan import print_plan
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image import build, engine, push, tags

SMOKE_CSV = b"a,b,c\n1,1,x\n2,1,y\n3,2,y\n4,2,y\n"
SMOKE_POLLS = 10
SMOKE_WAIT_SECONDS = 30


@dataclass(frozen=True)
class Step:
    """One bootstrap step: what it does (for the plan) and how (returns True when it changed)."""

    name: str
    plan: str
    run: Callable[[], bool]


@dataclass
class Run:
    """What the steps share while they run (filled as they go)."""

    c: Context
    cfg: EnvConfig
    tag: str
    push: bool
    yes: bool = False
    registry_auth: dict[str, str] | None = None  # creates the image pull Secret when set
    connection: kube.Kube | None = None

    @property
    def ref(self) -> str:
        return f"{self.cfg.toolkit.IMAGE_NAME}:{self.tag}"

    def connect(self) -> kube.Kube:
        if self.connection is None:
            self.connection = kube.connect(self.cfg)
        return self.connection


def default_tag(c: Context, cfg: EnvConfig) -> str:
    """The image tag of the working tree: its release tag if HEAD has one, else the short sha."""
    return tags.revision(c, cfg.root).tags[0]


def plan_tag(c: Context, cfg: EnvConfig, tag: str | None) -> str:
    """The tag a run would use; readable even where git is unusable (dry run)."""
    if tag:
        return tag
    try:
        return default_tag(c, cfg)
    except Exit:
        return "<short sha of HEAD>"


def _doctor(run: Run) -> bool:
    print_report(run_checks(server_checks(run.c)), "doctor (server)")
    return False


def _namespace(run: Run) -> bool:
    namespace = run.cfg.namespace
    created = kube.ensure_namespace(run.connect().core, namespace, dict(names.NAMESPACE_LABELS))
    ok(f"namespace {namespace} " + ("created" if created else "exists"))
    return created


def _secrets(run: Run) -> bool:
    rows = ensure_secrets(run.cfg, run.connect())
    print_table("Secrets", ("Secret", "Action"), rows)
    return any(action != "kept" for _, action in rows)


def _build(run: Run) -> bool:
    try:
        before = engine.connect().images.get(run.ref).id
    except (DockerException, Exit):
        before = None
    revision_tags = tags.revision(run.c, run.cfg.root).tags
    extra = [] if run.tag in revision_tags else [run.tag]
    result = build.build(run.c, run.cfg, extra_tags=extra)
    return result.image_id != before


def _ship(run: Run) -> bool:
    if run.push:
        push.push(run.c, run.cfg, push_tags=[run.tag])
        return True
    return k3s.load_into_k3s(run.c, run.ref)


def _deploy(run: Run) -> bool:
    rendered = render(run.c, run.cfg, run.tag)
    k = run.connect()
    wait = ROLLOUT_TIMEOUT_SECONDS  # a deploy already running (e.g. auto-update) finishes first
    with lock.exclusive(k.coordination, run.cfg.namespace, f"bootstrap {run.tag}", wait):
        changed = deploy_release(
            run.c, run.cfg, k, rendered, run.tag, yes=run.yes, registry_auth=run.registry_auth
        )
    return traefik.apply_traefik_config(run.c, run.cfg) or changed


def smoke(client: Any, timeout_polls: int = SMOKE_POLLS) -> str:
    """Upload a CSV, run an FD task, poll it to the end, delete the dataset; returns a summary."""
    upload = client.post(
        "/api/v1/datasets",
        files={"file": ("smoke.csv", SMOKE_CSV, "text/csv")},
        data={"separator": ",", "has_header": "true"},
    )
    if upload.status_code != 201:
        raise Exit(f"Smoke test: upload answered {upload.status_code}: {upload.text[:200]}")
    dataset = upload.json()["id"]
    try:
        created = client.post("/api/v1/tasks", json={"dataset_id": dataset, "primitive": "fd"})
        if created.status_code != 202:
            raise Exit(f"Smoke test: task creation answered {created.status_code}")
        task_id = created.json()["id"]
        for _ in range(timeout_polls):
            state = client.get(f"/api/v1/tasks/{task_id}", params={"wait": SMOKE_WAIT_SECONDS})
            body = state.json()
            if body["status"] == "succeeded":
                return f"{len(body['result']['fds'])} FDs found"
            if body["status"] == "failed":
                raise Exit(f"Smoke test: the task failed: {body.get('error')}")
        raise Exit(f"Smoke test: task {task_id} not finished after {timeout_polls} polls")
    finally:
        for _ in range(timeout_polls):
            if client.delete(f"/api/v1/datasets/{dataset}").status_code != 409:
                break
            time.sleep(1)


def _smoke(run: Run) -> bool:
    options = edge.ingress_client_options(run.cfg, run.connect().core)
    with httpx.Client(timeout=SMOKE_WAIT_SECONDS + 15, **options) as client:
        ok(f"smoke test through the ingress: {smoke(client)}")
    return False  # the smoke test removes what it created


def steps(run: Run) -> list[Step]:
    cfg = run.cfg
    ship = (
        f"images.push {run.ref} to {cfg.toolkit.IMAGE_REGISTRY}"
        if run.push
        else f"images.load {run.ref} into k3s (docker save -> k3s ctr images import, pinned)"
    )
    try:
        version = k3s.load_lock().version
    except Exit as exc:
        version = f"(k3s.lock unusable: {exc.message})"
    return [
        Step("doctor", "check this host (Docker engine, kubectl, k3s)", lambda: _doctor(run)),
        Step(
            "k3s.install",
            f"install k3s {version} from k3s.lock (sha256 verified)",
            lambda: k3s.install(run.c, k3s.load_lock()),
        ),
        Step(
            "namespace",
            f"create namespace {cfg.namespace} (Pod Security: restricted)",
            lambda: _namespace(run),
        ),
        Step(
            "secrets.generate",
            f"create missing Secrets in {cfg.namespace}, keep existing ones",
            lambda: _secrets(run),
        ),
        Step("images.build", f"build {run.ref}", lambda: _build(run)),
        Step("images.load", ship, lambda: _ship(run)),
        Step(
            "deploy",
            f"render + diff + apply (prune) {cfg.name}, migrate, wait for rollouts; Traefik: "
            f"TLS_MODE={cfg.toolkit.TLS_MODE}",
            lambda: _deploy(run),
        ),
        Step(
            "smoke",
            f"upload, create a task, poll its result via {cfg.toolkit.API_HOST}",
            lambda: _smoke(run),
        ),
    ]


def _password_command(namespace: str, secret: str) -> str:
    """How to read a generated password (never printed by the toolkit itself)."""
    return (
        f"kubectl -n {namespace} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d"
    )


def summary_rows(cfg: EnvConfig) -> list[tuple[str, str]]:
    namespace, secret = cfg.namespace, names.FlowerSecret.NAME
    rows = [
        ("API", f"{cfg.toolkit.API_BASE_URL}/api/v1  (docs: /docs)"),
        ("Flower", f"{cfg.toolkit.FLOWER_BASE_URL}  user {cfg.backend.FLOWER_USER}"),
        (
            "Flower password",
            f"Secret {namespace}/{secret} key {names.FlowerSecret.PASSWORD}: "
            + _password_command(namespace, secret),
        ),
    ]
    if edge.restricted(cfg):
        rows.append(
            (
                "API login (API_ACCESS=restricted)",
                f"user {cfg.toolkit.API_AUTH_USER}, password: "
                + _password_command(namespace, names.ApiAuthSecret.NAME),
            )
        )
    return [
        *rows,
        (
            "Database / broker passwords",
            f"Secrets {names.PostgresSecret.NAME}, {names.RabbitMQSecret.NAME} in {namespace}",
        ),
        ("Cluster admin kubeconfig", "/etc/rancher/k3s/k3s.yaml (root) and ~/.kube/config (0600)"),
        ("Team access", f"invoke access.grant --name NAME --role viewer|devops --env {cfg.name}"),
    ]


def bootstrap(run: Run, dry_run: bool) -> bool:
    """Run (or with DRY_RUN only list) the steps; True when anything changed."""
    plan = steps(run)
    if dry_run:
        print_plan(
            f"bootstrap plan for {run.cfg.name}",
            [(s.name, s.plan) for s in plan],
            columns=("step", "what it does"),
        )
        print_table("after the run", ("what", "where"), summary_rows(run.cfg))
        return False
    changed: list[str] = []
    for number, item in enumerate(plan, 1):
        step(f"[{number}/{len(plan)}] {item.name}: {item.plan}")
        if item.run():
            changed.append(item.name)
    print_table(f"desbordante {run.cfg.name} is up", ("what", "where"), summary_rows(run.cfg))
    if changed:
        ok(f"changed: {', '.join(changed)}")
    else:
        ok("everything was already in place: nothing changed")
    return bool(changed)
