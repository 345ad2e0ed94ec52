"""bootstrap: the dry-run plan from the real CLI, the dry run being the plan the real run
executes, a second run changing nothing, and the smoke test through the ingress.

The server is simulated where it cannot run here: the cluster is the fake API server (the real
secrets.generate and deploy run against it), this host's k3s and containerd answer through
`Server` (its other commands, `kubectl kustomize` and git, really run), the Docker engine is a
stand-in and the image build is stubbed; the smoke test's HTTP goes to a MockTransport that
serves the API's contract, behind the real client options of the ingress.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from invoke import Context, Exit, MockContext, Result
from support.fake_engine import FakeDocker, FakeImage
from support.fakeapi.k3s import Cluster, config

from desbordante_ops.cluster import bootstrap as bs
from desbordante_ops.cluster.host import k3s
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.core import plan
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image import build, engine
from desbordante_ops.image.build import BuildResult
from desbordante_ops.tasks import bootstrap as bootstrap_tasks
from desbordante_service.verify import EXPECTED_FDS, VERIFY_COLUMNS, VERIFY_ROWS

ROOT = Path(__file__).resolve().parents[2]
STEPS = (
    "doctor",
    "k3s.install",
    "secrets.generate",
    "images.build",
    "images.load",
    "deploy",
    "smoke",
)
TAG = "v1.4.0"
PLAN_TITLE = "bootstrap plan for stage"


def test_dry_run_prints_the_whole_plan_and_exits_zero(tmp_path: Path) -> None:
    """Changed by design: the namespace is part of the secrets.generate step (it creates it),
    and the deploy row says which TLS mode is in effect (TLS_MODE=auto: self-signed for the
    shipped .localhost hosts)."""
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "bootstrap", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in STEPS:
        assert f" {name} " in out, name
    assert "bootstrap plan for stage (dry run: nothing is changed)" in out
    assert "v1.36.4+k3s1" in out  # from k3s.lock
    assert "namespace desbordante-stage (Pod Security: restricted)" in out
    assert "selfsigned" in out
    assert "Traceback" not in proc.stderr


def test_local_env_and_push_without_registry_are_user_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(Exit, match="stage"):
        bootstrap_tasks.bootstrap(MockContext(), env="local")
    monkeypatch.setenv("IMAGE_REGISTRY", "")
    with pytest.raises(Exit, match="IMAGE_REGISTRY"):
        bootstrap_tasks.bootstrap(MockContext(), env="stage", push=True)


def test_acme_without_an_email_is_refused_before_anything_in_a_dry_run_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Public hosts make TLS_MODE=auto pick ACME, which needs ACME_EMAIL: the deploy step would
    refuse that after k3s was installed, so the plan refuses it first, dry run included."""
    monkeypatch.setenv("API_HOST", "api.example.org")
    monkeypatch.setenv("FLOWER_INGRESS_HOST", "flower.example.org")
    monkeypatch.setenv("ACME_EMAIL", "")
    for dry_run in (True, False):
        with plan.watching() as seen, pytest.raises(Exit, match="ACME_EMAIL"):
            bootstrap_tasks.bootstrap(Context(), env="stage", dry_run=dry_run)
        assert seen == []  # no plan was printed, nothing ran


# --- the server, as far as bootstrap sees it ---------------------------------------------------


class Server(Context):
    """This host: k3s installed at the pinned version and running, its containerd holding
    what was imported (and pinned); every other command really runs."""

    # Declared on the class: invoke's Context turns unknown attribute sets into config entries.
    commands: list[str] = []  # noqa: RUF012 - replaced per instance
    pinned: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.commands = []
        self.pinned = False

    def run(self, command: str, **kwargs: Any) -> Result:
        if not command.startswith(str(k3s.BIN_PATH)) and not command.startswith("systemctl "):
            return super().run(command, **kwargs)
        self.commands.append(command)
        if command == f"{k3s.BIN_PATH} --version":
            return Result(f"k3s version {k3s.load_lock().version} (abcdef12)\n")
        if command == "systemctl is-active --quiet k3s":
            return Result("")
        if " crictl inspecti " in command:
            found = f"{FakeImage.id} true\n" if self.pinned else ""
            return Result(found, exited=0 if self.pinned else 1)
        if " images label " in command:
            self.pinned = True
        return Result("")


class Engine(FakeDocker):
    """The local Docker engine: it holds the one image and answers the doctor's version."""

    def version(self) -> dict[str, str]:
        return {"Version": "27.5.1"}


class Api:
    """The API's contract as the smoke test (desbordante_service.verify) uses it, reached
    through the ingress: each request must carry the Host header and the basic-auth login."""

    def __init__(self, k3s: Cluster, cfg: EnvConfig, task: str = "succeeded") -> None:
        self.server, self.cfg, self.task = k3s.server, cfg, task
        self.seen: list[str] = []
        self.datasets: set[str] = set()

    def login(self) -> str:
        """The Authorization header Traefik's basicAuth accepts (from the api-auth Secret)."""
        secret = self.server.get("Secret", names.ApiAuthSecret.NAME, self.cfg.namespace)
        assert secret is not None
        password = base64.b64decode(secret["data"][names.ApiAuthSecret.PASSWORD]).decode()
        user = self.cfg.toolkit.API_AUTH_USER
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1"
        assert request.headers["host"] == self.cfg.toolkit.API_HOST
        assert request.url.scheme == ("https" if edge.tls_on(self.cfg) else "http")
        if edge.restricted(self.cfg):
            assert request.headers.get("authorization") == self.login()
        path = request.url.path
        self.seen.append(f"{request.method} {path}")
        if (request.method, path) == ("GET", "/health/ready"):
            return httpx.Response(200, json={"status": "ready"})
        if (request.method, path) == ("POST", "/api/v1/datasets"):
            self.datasets.add("d1")
            body = {"id": "d1", "columns": VERIFY_COLUMNS, "row_count": VERIFY_ROWS}
            return httpx.Response(201, json=body)
        if (request.method, path) == ("POST", "/api/v1/tasks"):
            assert json.loads(request.content)["dataset_id"] == "d1"
            return httpx.Response(202, json={"id": "t1", "status": "queued"})
        if (request.method, path) == ("GET", "/api/v1/tasks/t1"):
            fds = [{"lhs": list(lhs), "rhs": rhs} for lhs, rhs in sorted(EXPECTED_FDS)]
            if self.task == "succeeded":
                return httpx.Response(200, json={"id": "t1", "status": "succeeded",
                                                 "result": {"fds": fds}})  # fmt: skip
            return httpx.Response(200, json={"id": "t1", "status": "failed", "error": "boom"})
        if (request.method, path) == ("DELETE", "/api/v1/datasets/d1"):
            self.datasets.discard("d1")
            return httpx.Response(204)
        return httpx.Response(404, json={"detail": "Not Found"})


def through(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke test's client options as bootstrap builds them, its transport API."""
    real = edge.ingress_client_options

    def options(cfg: Any, core: Any) -> dict[str, Any]:
        return {**real(cfg, core), "transport": httpx.MockTransport(api)}

    monkeypatch.setattr(edge, "ingress_client_options", options)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """k3s's paths under TMP_PATH, root, the Docker engine and the build stubbed."""
    monkeypatch.setattr(k3s, "BIN_PATH", tmp_path / "usr/local/bin/k3s")
    monkeypatch.setattr(k3s, "CONFIG_PATH", tmp_path / "etc/rancher/k3s/config.yaml")
    monkeypatch.setattr(k3s, "K3S_KUBECONFIG", tmp_path / "etc/rancher/k3s/k3s.yaml")
    monkeypatch.setattr(k3s, "REGISTRIES_PATH", tmp_path / "etc/rancher/k3s/registries.yaml")
    monkeypatch.setattr(k3s, "UNINSTALL_SCRIPT", tmp_path / "usr/local/bin/k3s-uninstall.sh")
    monkeypatch.setattr(k3s, "is_root", lambda: True)
    docker = Engine()
    monkeypatch.setattr(engine, "connect", lambda timeout=600: docker)

    def build_backend(c: Any, cfg: Any, extra_tags: Any = (), **kw: Any) -> BuildResult:
        return BuildResult(FakeImage.id, 1, [f"{cfg.toolkit.IMAGE_NAME}:{t}" for t in extra_tags],
                           [])  # fmt: skip

    monkeypatch.setattr(build, "build_backend", build_backend)
    return docker


def bootstrap_run(k3s_cluster: Cluster, c: Context) -> bs.Run:
    run = bs.Run(c=c, cfg=config("stage"), tag=TAG, push=False, yes=True)
    run.connection = k3s_cluster.admin
    return run


def bootstraps(seen: list[plan.Seen]) -> list[plan.Seen]:
    """The bootstrap plans among SEEN (its steps execute plans of their own)."""
    return [s for s in seen if s.title == PLAN_TITLE]


def test_the_dry_run_is_the_plan_the_real_run_executes_and_a_second_run_changes_nothing(
    k3s: Cluster,
    server: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config("stage")
    api = Api(k3s, cfg)
    through(api, monkeypatch)
    c = Server()
    before = len(k3s.server.writes())
    with plan.watching() as seen:
        assert bs.bootstrap_environment(bootstrap_run(k3s, c), dry_run=True) is False
        assert len(k3s.server.writes()) == before and c.commands == [] and api.seen == []
        assert bs.bootstrap_environment(bootstrap_run(k3s, c), dry_run=False) is True
    dry, real = bootstraps(seen)
    assert dry.dry_run and not real.dry_run
    assert dry.rows == real.rows
    assert dry.ran == [] and real.ran == real.runnable == dry.runnable == real.rows
    assert [step for step, _ in real.ran] == list(STEPS)
    assert "changed something" in capsys.readouterr().out
    # What the steps did: Secrets made, the image loaded and pinned, the release deployed and
    # verified, the dataset of the smoke test deleted again.
    assert k3s.server.get("Secret", names.ApiAuthSecret.NAME, cfg.namespace) is not None
    assert c.pinned and [cmd for cmd in c.commands if " images import " in cmd]
    assert server.image.named == [True]
    assert k3s.server.get("Deployment", names.API, cfg.namespace) is not None
    assert api.seen[0] == "GET /health/ready" and api.seen[-1] == "DELETE /api/v1/datasets/d1"
    assert api.datasets == set()

    c.commands = []
    with plan.watching() as again:
        assert bs.bootstrap_environment(bootstrap_run(k3s, c), dry_run=False) is False
    (second,) = bootstraps(again)
    assert second.rows == real.rows and second.ran == real.ran
    assert "everything was already in place: nothing changed" in capsys.readouterr().out
    assert server.image.named == [True]  # not saved or imported again: k3s has it, pinned
    assert not [cmd for cmd in c.commands if " images import " in cmd]


def test_a_failed_smoke_test_is_one_line_and_leaves_no_dataset(
    k3s: Cluster, server: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("stage")
    api = Api(k3s, cfg, task="failed")
    through(api, monkeypatch)
    run = bootstrap_run(k3s, Server())
    steps = {s.action: s for s in bs.bootstrap_plan(run).steps}
    assert steps["secrets.generate"].run is not None and steps["smoke"].run is not None
    steps["secrets.generate"].run()  # the smoke test logs in with the api-auth Secret
    with pytest.raises(Exit) as raised:
        steps["smoke"].run()
    assert str(raised.value.message) == (
        "Smoke test through the ingress failed (see the step above); the stack runs, but does "
        "not answer through Traefik: `invoke doctor --env stage`."
    )
    assert api.seen[-1] == "DELETE /api/v1/datasets/d1" and api.datasets == set()
