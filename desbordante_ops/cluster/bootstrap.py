"""From a bare server to a verified stack, step by step; every step idempotent.

doctor -> k3s.install -> namespace -> secrets.generate -> images.build -> images.load (or push)
-> deploy -> smoke test through the ingress (upload, create a task, poll its result) -> table
of URLs and where the credentials are. Each step reports whether it changed anything, so a
second run says "nothing changed". A dry run prints the plan and touches nothing (no root,
cluster, k3s or Docker needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from docker.errors import DockerException
from invoke import Context, Exit

from desbordante_ops.cluster.host import k3s
from desbordante_ops.cluster.host.tools import server_checks
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.secrets.generate import generate_plan
from desbordante_ops.core.checks import print_report, run_checks
from desbordante_ops.core.console import ok, print_table
from desbordante_ops.core.plan import Plan, Step, execute
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.image import build, engine, push, tags
from desbordante_service.verify import run_verify

SMOKE_TIMEOUT_SECONDS = 120


@dataclass
class Run:
    """What the steps share while they run (filled as they go)."""

    c: Context
    cfg: EnvConfig
    tag: str
    push: bool
    yes: bool = False
    registry_auth: dict[str, str] | None = None  # creates the image pull Secret when set
    connection: Kube | None = None
    changed: bool = False

    @property
    def ref(self) -> str:
        return f"{self.cfg.toolkit.IMAGE_NAME}:{self.tag}"

    def connect(self) -> Kube:
        """The cluster: as root on the server (after k3s.install) through k3s's own admin
        kubeconfig unless KUBECONFIG_PATH is set; else the environment's kubeconfig."""
        if self.connection is None:
            if k3s.is_root():
                path = k3s.server_kubeconfig(self.cfg)
                self.cfg = load_config(self.cfg.name, {"KUBECONFIG_PATH": str(path)})
            self.connection = connect(self.cfg)
        return self.connection


def plan_tag(c: Context, cfg: EnvConfig, tag: str | None) -> str:
    """The tag a run would use; readable even where git is unusable (dry run)."""
    if tag:
        return tag
    try:
        return tags.default_tag(c, cfg.root)
    except Exit:
        return "<short sha of HEAD>"


def _doctor(run: Run) -> None:
    print_report(run_checks(server_checks(run.c)), "doctor (server)")


def _k3s(run: Run) -> None:
    ran = k3s.run_install(run.c, k3s.load_lock(), None, dry_run=False)
    run.changed = run.changed or bool(ran)


def _secrets(run: Run) -> None:
    ran = execute(generate_plan(run.cfg, run.connect()))
    run.changed = run.changed or bool(ran)


def _build(run: Run) -> None:
    try:
        before = engine.connect().images.get(run.ref).id
    except (DockerException, Exit):
        before = None
    revision_tags = tags.revision(run.c, run.cfg.root).tags
    extra = [] if run.tag in revision_tags else [run.tag]
    result = build.build_backend(run.c, run.cfg, extra_tags=extra)
    run.changed = run.changed or result.image_id != before


def _ship(run: Run) -> None:
    if run.push:
        push.push_image(run.c, run.cfg, push_tags=[run.tag])
        run.changed = True
        return
    run.changed = k3s.load_into_k3s(run.c, run.ref) or run.changed


def _deploy(run: Run) -> None:
    options = Options(yes=run.yes, registry_auth=run.registry_auth)
    x = Release.prepare(run.c, run.cfg, run.connect(), run.tag, options)
    run.changed = deploy_release(x) or run.changed


def _smoke(run: Run) -> None:
    """The verify steps through the ingress: upload, profile, check, delete (nothing stays)."""
    options = edge.ingress_client_options(run.cfg, run.connect().core)
    with httpx.Client(timeout=SMOKE_TIMEOUT_SECONDS, **options) as client:
        if not run_verify(client, SMOKE_TIMEOUT_SECONDS):
            raise Exit(
                "Smoke test through the ingress failed (see the step above); the stack "
                "runs, but does not answer through Traefik: `invoke doctor --env "
                f"{run.cfg.name}`."
            )
    ok("smoke test through the ingress passed")


def bootstrap_plan(run: Run) -> Plan:
    """The steps of bringing CFG's environment up on this server (each one idempotent).

    The edge settings are checked first (e.g. ACME without ACME_EMAIL): what the deploy step
    would refuse, the plan refuses before k3s is installed, in a dry run too.
    """
    cfg = run.cfg
    edge.check(cfg)
    ship = (
        f"images.push {run.ref} to {cfg.toolkit.IMAGE_REGISTRY}"
        if run.push
        else f"images.load {run.ref} into k3s (docker save -> k3s ctr images import, pinned)"
    )
    try:
        version = k3s.load_lock().version
    except Exit as exc:
        version = f"(k3s.lock unusable: {exc.message})"
    steps = [
        Step("doctor", "check this host (Docker engine, kubectl, k3s)", lambda: _doctor(run)),
        Step(
            "k3s.install",
            f"install k3s {version} from k3s.lock (sha256 verified)",
            lambda: _k3s(run),
        ),
        Step(
            "secrets.generate",
            f"namespace {cfg.namespace} (Pod Security: restricted); create missing Secrets, "
            "keep existing ones",
            lambda: _secrets(run),
        ),
        Step("images.build", f"build {run.ref}", lambda: _build(run)),
        Step("images.load", ship, lambda: _ship(run)),
        Step(
            "deploy",
            f"apply (server-side, prune) {cfg.name}, migrate, wait, verify, record; "
            f"{edge.describe_tls(cfg)}",
            lambda: _deploy(run),
        ),
        Step(
            "smoke",
            f"upload, profile, check and delete a dataset via {cfg.toolkit.API_HOST}",
            lambda: _smoke(run),
        ),
    ]
    return Plan(f"bootstrap plan for {cfg.name}", steps, columns=("step", "what it does"))


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


def bootstrap_environment(run: Run, dry_run: bool) -> bool:
    """Run (or with DRY_RUN only list) the steps; True when anything changed."""
    execute(bootstrap_plan(run), dry_run)
    title = "after the run" if dry_run else f"desbordante {run.cfg.name} is up"
    print_table(title, ("what", "where"), summary_rows(run.cfg))
    if not dry_run:
        ok(
            "changed something"
            if run.changed
            else "everything was already in place: nothing changed"
        )
    return run.changed
