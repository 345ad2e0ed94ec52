"""`invoke bootstrap [--env stage] [--dry-run]`: from a bare server to a verified stack.

doctor -> k3s.install -> namespace -> secrets.generate -> images.build -> images.load (or push)
-> deploy -> smoke test through the ingress (upload, create a task, poll its result) -> table
of URLs and where the credentials are. Every step is idempotent and reports whether it changed
anything, so a second run says "nothing changed". --dry-run prints the plan and touches nothing
(no root, cluster, k3s or Docker needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invoke import Exit, task

from desbordante_ops import k8s_names as names
from desbordante_ops.config import REPO_ROOT, EnvConfig, load_config
from desbordante_ops.console import ok, print_table, step, warn

SMOKE_CSV = b"a,b,c\n1,1,x\n2,1,y\n3,2,y\n4,2,y\n"
SMOKE_POLLS = 10
SMOKE_WAIT_SECONDS = 30
INGRESS_URL = "http://127.0.0.1"


@dataclass(frozen=True)
class Step:
    """One bootstrap step: what it does (for the plan) and how (returns True when it changed)."""

    name: str
    plan: str
    run: Callable[[], bool]


@dataclass
class Context:
    """What the steps share while they run (filled as they go)."""

    c: Any
    cfg: EnvConfig
    tag: str
    push: bool
    kube: Any = None
    image_id: str | None = None


def plan_tag(tag: str | None) -> str:
    """The tag a run would use; readable even where git is unusable (dry run)."""
    from desbordante_ops import deploy

    if tag:
        return tag
    try:
        return deploy.default_tag()
    except Exit:
        return "<short sha of HEAD>"


def _doctor(ctx: Context) -> bool:
    from desbordante_ops import doctor

    report = doctor.run_checks(doctor.tooling_checks())
    doctor.print_report(report, "doctor (server)")
    return False


def _k3s(ctx: Context) -> bool:
    from desbordante_ops import k3s

    return k3s.install(ctx.c, k3s.load_lock())


def _connect(ctx: Context) -> Any:
    from desbordante_ops import kube

    if ctx.kube is None:
        ctx.kube = kube.connect(ctx.cfg)
    return ctx.kube


def _namespace(ctx: Context) -> bool:
    from desbordante_ops import kube

    namespace = names.namespace_for(ctx.cfg.name)
    created = kube.ensure_namespace(_connect(ctx).core, namespace, dict(names.NAMESPACE_LABELS))
    ok(f"namespace {namespace} " + ("created" if created else "exists"))
    return created


def _secrets(ctx: Context) -> bool:
    from desbordante_ops import cluster_secrets

    rows = cluster_secrets.ensure_secrets(ctx.cfg, _connect(ctx))
    print_table("Secrets", ("Secret", "Action"), rows)
    return any(action != "kept" for _, action in rows)


def _build(ctx: Context) -> bool:
    import docker

    from desbordante_ops import images, imagetags

    ref = f"{ctx.cfg['IMAGE_NAME']}:{ctx.tag}"
    try:
        before = docker.from_env().images.get(ref).id
    except docker.errors.DockerException:
        before = None
    extra = [] if ctx.tag in imagetags.revision(REPO_ROOT).tags else [ctx.tag]
    result = images.build(ctx.c, image=ctx.cfg["IMAGE_NAME"], tags=extra)
    ctx.image_id = result.image_id
    return result.image_id != before


def _ship(ctx: Context) -> bool:
    from desbordante_ops import images, k3s

    ref = f"{ctx.cfg['IMAGE_NAME']}:{ctx.tag}"
    if ctx.push:
        images.push(ctx.c, env=ctx.cfg.name, tags=[ctx.tag])
        return True
    return k3s.load_into_k3s(ctx.c, ref)


def _deploy(ctx: Context) -> bool:
    from desbordante_ops import deploy

    manifests = deploy.render_manifests(ctx.c, ctx.cfg.name, ctx.tag)
    return deploy.deploy_release(ctx.c, ctx.cfg, _connect(ctx), ctx.tag, manifests)


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


def _smoke(ctx: Context) -> bool:
    import httpx

    host = ctx.cfg.get("API_HOST")
    headers = {"Host": host} if host else {}
    with httpx.Client(base_url=INGRESS_URL, headers=headers, timeout=SMOKE_WAIT_SECONDS + 15) as cl:
        ok(f"smoke test through the ingress: {smoke(cl)}")
    return False  # the smoke test removes what it created


def steps(ctx: Context) -> list[Step]:
    env = ctx.cfg.name
    namespace = names.namespace_for(env)
    ref = f"{ctx.cfg['IMAGE_NAME']}:{ctx.tag}"
    ship = (
        f"images.push {ref} to {ctx.cfg.get('IMAGE_REGISTRY')}"
        if ctx.push
        else (f"images.load {ref} into k3s (docker save -> k3s ctr images import)")
    )
    from desbordante_ops import k3s

    try:
        version = k3s.load_lock().version
    except Exit as exc:
        version = f"(k3s.lock unusable: {exc.message})"
    return [
        Step("doctor", "check this host (Docker engine, kubectl, k3s)", lambda: _doctor(ctx)),
        Step(
            "k3s.install",
            f"install k3s {version} from k3s.lock (sha256 verified)",
            lambda: _k3s(ctx),
        ),
        Step(
            "namespace",
            f"create namespace {namespace} (Pod Security: restricted)",
            lambda: _namespace(ctx),
        ),
        Step(
            "secrets.generate",
            f"create missing Secrets in {namespace}, keep existing ones",
            lambda: _secrets(ctx),
        ),
        Step("images.build", f"build {ref}", lambda: _build(ctx)),
        Step("images.load", ship, lambda: _ship(ctx)),
        Step(
            "deploy",
            f"render + diff + apply {env}, migrate, wait for rollouts",
            lambda: _deploy(ctx),
        ),
        Step(
            "smoke",
            f"upload, create a task, poll its result via {ctx.cfg.get('API_HOST')}",
            lambda: _smoke(ctx),
        ),
    ]


def summary_rows(cfg: EnvConfig) -> list[tuple[str, str]]:
    namespace = names.namespace_for(cfg.name)
    secret = names.FlowerSecret.NAME
    return [
        ("API", f"http://{cfg.get('API_HOST')}/api/v1  (docs: /docs)"),
        ("Flower", f"http://{cfg.get('FLOWER_INGRESS_HOST')}  user {cfg.get('FLOWER_USER')}"),
        (
            "Flower password",
            f"Secret {namespace}/{secret} key {names.FlowerSecret.PASSWORD}: kubectl -n "
            f"{namespace} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d",
        ),
        (
            "Database / broker passwords",
            f"Secrets {names.PostgresSecret.NAME}, {names.RabbitMQSecret.NAME} in {namespace}",
        ),
        ("Cluster admin kubeconfig", "/etc/rancher/k3s/k3s.yaml (root) and ~/.kube/config (0600)"),
        ("Team access", f"invoke access.grant NAME --role viewer|devops --env {cfg.name}"),
    ]


def run(ctx: Context, dry_run: bool) -> bool:
    """Run (or with DRY_RUN only list) the steps; True when anything changed."""
    plan = steps(ctx)
    if dry_run:
        print_table(
            f"bootstrap plan for {ctx.cfg.name} (dry run: nothing is touched)",
            ("#", "step", "what it does"),
            [(str(i), s.name, s.plan) for i, s in enumerate(plan, 1)],
        )
        print_table("after the run", ("what", "where"), summary_rows(ctx.cfg))
        return False
    changed: list[str] = []
    for number, item in enumerate(plan, 1):
        step(f"[{number}/{len(plan)}] {item.name}: {item.plan}")
        if item.run():
            changed.append(item.name)
    print_table(f"desbordante {ctx.cfg.name} is up", ("what", "where"), summary_rows(ctx.cfg))
    if changed:
        ok(f"changed: {', '.join(changed)}")
    else:
        ok("everything was already in place: nothing changed")
    return bool(changed)


@task(
    default=True,
    help={
        "env": "Cluster environment to bring up: stage (default) or prod.",
        "tag": "Image tag (default: release tag of HEAD, else its short sha).",
        "push": "Push the image to IMAGE_REGISTRY instead of loading it into k3s directly.",
        "dry_run": "Print the plan only; touch nothing (works without root, k3s or Docker).",
    },
)
def bootstrap(
    c: Any, env: str = "stage", tag: str | None = None, push: bool = False, dry_run: bool = False
) -> None:
    """Bring a server from nothing to a verified stack (idempotent; --dry-run shows the plan)."""
    if env not in names.KUBE_ENVS:
        raise Exit(f"--env {env}: bootstrap sets up a cluster; use one of {names.KUBE_ENVS}.")
    cfg = load_config(env)
    if push and not cfg.get("IMAGE_REGISTRY"):
        raise Exit(f"--push needs IMAGE_REGISTRY in env/{env}.env (or the environment).")
    if env == "prod" and not dry_run:
        warn("prod only takes a release that stage already runs; deploy asks for confirmation")
    run(Context(c=c, cfg=cfg, tag=plan_tag(tag), push=push), dry_run)
