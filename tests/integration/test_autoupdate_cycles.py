"""Stage auto-update: real cycles against a REAL registry, a REAL git remote and the one fake.

The registry is Debian's `docker-registry` on loopback with htpasswd (tests/support/registry.py,
installed when missing); images are pushed into it with the registry HTTP API
(tests/support/oci.py: config with the revision label, one empty layer, a manifest). The branch
lives in a local bare git repository with commits of this repository's k8s/ and env/. The
cluster is the fake API server (tests/support/fakeapi) behind the real kubernetes client, with
its simulated controllers: the cycle's deploy is the real deploy plan (server-side apply,
prune, migrate Job, rollout waits, verify Job, ledger record), rendered by `kubectl kustomize`
from each commit's own manifests (tests/support/fakeapi/autoupdate.py: the remote, broken
images, what rolled out). Waits run on a clock that moves only when they sleep.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from invoke import Context, Exit, Result
from support import registry as test_registry
from support import token_registry
from support.clock import FakeClock
from support.dockerd import Unavailable
from support.fakeapi.autoupdate import Origin, Rollouts, Stage, api_image, stage_cluster
from support.fakeapi.kinds import Kind
from support.fakeapi.server import FakeApiServer
from support.oci import push_image

from desbordante_ops.cluster.autoupdate import cycle as au
from desbordante_ops.cluster.autoupdate import setup as autoupdate_setup
from desbordante_ops.cluster.autoupdate import statefile as stored
from desbordante_ops.cluster.autoupdate import units as autoupdate_units
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.release import lock, verify
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import STAGE_NAMESPACE
from desbordante_ops.cluster.release.gate import gate
from desbordante_ops.cluster.release.ledger import ledger
from desbordante_ops.cluster.release.rollback import CHECK_PREFIX
from desbordante_ops.cluster.secrets.pull import PULL_SECRET
from desbordante_ops.core import console
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.image.registry import Registry, RegistryError
from desbordante_ops.tasks import autoupdate as tasks

STAGE_NS = STAGE_NAMESPACE
REPOSITORY = "desbordante/backend"
USER = "ci"
VERIFY_FAILED = "verify: task FAILED: the worker never picked it up"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@pytest.fixture(scope="module")
def running_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[test_registry.Registry]:
    try:
        with test_registry.running(
            tmp_path_factory.mktemp("registry"), USER, secrets.token_urlsafe(24)
        ) as running:
            yield running
    except Unavailable as reason:
        pytest.fail(f"the loopback registry cannot run here: {reason}")


@dataclass
class World:
    """Everything one auto-update test works with."""

    origin: Origin
    mirror: Path  # auto-update's own bare mirror of the remote
    registry: test_registry.Registry
    image: str  # <registry>/<repository>
    cluster: Stage
    rollouts: Rollouts
    state: stored.State = field(default_factory=stored.State)
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def server(self) -> FakeApiServer:
        return self.cluster.server

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.registry.username, "password": self.registry.password}

    def push(self, tag: str, revision: str) -> str:
        creds = (self.registry.username, self.registry.password)
        return push_image(self.registry.address, creds, self.repository, tag, revision)

    @property
    def repository(self) -> str:
        return self.image.partition("/")[2]

    def settings(self, root: Path | None = None, env: str = "stage") -> EnvConfig:
        flags = {"IMAGE_NAME": self.image}
        if root is None:
            return load_config(env, flags=flags, environ={})
        return load_config(env, flags=flags, environ={}, root=root)

    def cycle(self) -> au.Report:
        """One cycle, exactly as `autoupdate.run --once` runs it (fresh registry client)."""
        with Registry(self.image, self.auth) as client:
            x = au.Cycle(
                Context(),
                self.settings(),
                self.cluster.admin,
                client,
                self.mirror,
                str(self.origin.bare),
                "main",
                settings=self.settings,
                registry_auth=self.auth,
                timeout=120,
                clock=self.clock,
            )
            return au.run_cycle(x, self.state)

    def api_image(self) -> str:
        return api_image(self.server, STAGE_NS)

    def pinned(self, digest: str) -> str:
        return f"{self.image}@{digest}"

    def writes(self) -> int:
        """How many writes the API server has answered so far."""
        return len(self.server.writes())


@pytest.fixture
def world(running_registry: test_registry.Registry, tmp_path: Path) -> World:
    origin = Origin(tmp_path)
    origin.commit("the first release of the test")
    cluster = stage_cluster()
    # One repository per test: tags of other tests never mix in.
    image = f"{running_registry.address}/{REPOSITORY}-{secrets.token_hex(4)}"
    return World(
        origin=origin,
        mirror=tmp_path / "state" / "source-stage.git",
        registry=running_registry,
        image=image,
        cluster=cluster,
        rollouts=Rollouts(cluster.server, STAGE_NS),
    )


def short(sha: str) -> str:
    return sha[:7]


def schema_checks(server: FakeApiServer) -> list[str]:
    """The names of the schema-check Jobs created from now on (a list that fills)."""
    created: list[str] = []

    def seen(_: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind.kind == "Job" and name.startswith(CHECK_PREFIX) and name not in created:
            created.append(name)

    server.after_write.append(seen)
    return created


def good_then_bad(world: World) -> tuple[str, str, str, str]:
    """A good commit deployed by a cycle, then a newer commit with its image pushed:
    (good commit, its digest, bad commit, its digest)."""
    good = world.origin.head()
    good_digest = world.push(short(good), good)
    assert world.cycle().kind == au.DEPLOYED
    bad = world.origin.commit("a release that is broken")
    bad_digest = world.push(short(bad), bad)
    return good, good_digest, bad, bad_digest


# --- a new image appears -> the next cycle deploys it ----------------------------------------


def test_a_new_image_of_main_is_deployed_pinned_by_digest_with_its_own_manifests(
    world: World,
) -> None:
    first = world.origin.head()
    report = world.cycle()
    assert report.kind == au.WAITING and "CI has not published it yet" in report.message
    assert world.server.all("Deployment", STAGE_NS) == []

    digest = world.push(short(first), first)
    report = world.cycle()
    assert report.kind == au.DEPLOYED, report.message
    assert world.api_image() == world.pinned(digest)  # pinned, never the tag
    worker = world.server.get("Deployment", names.WORKER, STAGE_NS)
    assert worker is not None
    assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == world.pinned(digest)
    entry = ledger(world.cluster.admin.core)[f"{STAGE_NS}.{short(first)}"]
    assert entry.image_id == world.pinned(digest) and entry.verified  # the verify Job passed
    assert (world.state.deployed.tag, world.state.deployed.digest) == (short(first), digest)
    assert world.state.deployed.commit == first
    pull = world.server.get("Secret", PULL_SECRET, STAGE_NS)  # the private registry's image
    assert pull is not None and pull["type"] == "kubernetes.io/dockerconfigjson"

    env_file = (world.origin.work / "env" / "stage.env").read_text()
    second = world.origin.commit(
        "debug logging", {"env/stage.env": env_file.replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG")}
    )
    report = world.cycle()  # the commit is there, its image not yet: stage stays
    assert report.kind == au.WAITING and short(second) in report.message
    assert world.api_image() == world.pinned(digest)

    newer = world.push(short(second), second)
    report = world.cycle()
    assert report.kind == au.DEPLOYED, report.message
    assert world.api_image() == world.pinned(newer)
    levels = [
        cm["data"]["LOG_LEVEL"]
        for cm in world.server.all("ConfigMap", STAGE_NS)
        if "LOG_LEVEL" in (cm.get("data") or {})
    ]
    assert levels == ["DEBUG"]  # the manifests of that very commit (the old one pruned)
    assert world.rollouts.images == [world.pinned(digest), world.pinned(newer)]


def test_a_release_tag_at_the_head_is_deployed_under_its_tag_and_prod_accepts_it(
    world: World,
) -> None:
    sha = world.origin.head()
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    world.origin.tag("v1.4.0")
    release_digest = world.push("v1.4.0", sha)
    report = world.cycle()
    assert report.kind == au.DEPLOYED and "v1.4.0" in report.message  # the tag wins
    pinned = world.pinned(release_digest)
    entry = ledger(world.cluster.admin.core)[f"{STAGE_NS}.v1.4.0"]
    assert entry.image_id == pinned and entry.verified
    # The person's prod deploy: the gate finds the release stage ran and verified, by digest.
    prod = Release.prepare(
        Context(), world.settings(env="prod"), world.cluster.admin, "v1.4.0", Options(yes=True)
    )
    checked, rows = gate(prod, STAGE_NS)
    assert checked.image == pinned
    assert rows[0].action == "check" and f"prod runs {pinned}" in rows[0].target
    assert world.cycle().kind == au.CURRENT


# --- no new image -> nothing happens, status says so ------------------------------------------


def test_no_new_image_means_nothing_happens_and_status_says_so(world: World) -> None:
    sha = world.origin.head()
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    writes = world.writes()
    for _ in range(2):
        report = world.cycle()
        assert report.kind == au.CURRENT and "up to date" in report.message
    assert world.writes() == writes  # not even the lock: nothing was written
    rows = dict(stored.status_rows(world.state, {}, {}))
    assert rows["Outcome"].startswith("current: stage runs ")
    assert rows["Newest image"].startswith(f"{short(sha)} (")
    assert rows["Deployed"].startswith(f"{short(sha)} (")
    assert rows["Last error"] == "-"


def test_an_image_not_built_from_the_commit_is_skipped_with_a_note(world: World) -> None:
    sha = world.origin.head()
    world.push(short(sha), "0" * 40)  # a tag that looks right, another revision label
    writes = world.writes()
    report = world.cycle()
    assert report.kind == au.WAITING
    assert f"{short(sha)} was built from 000000000000" in report.message
    assert "not CI's image" in world.state.seen.note
    assert world.writes() == writes


# --- a broken image -> rollback, reported once, not retried ------------------------------------


def test_a_broken_image_is_rolled_back_reported_once_and_not_retried(world: World) -> None:
    good, good_digest, bad, bad_digest = good_then_bad(world)
    world.cluster.kubelet.broken.add(bad_digest)  # its pods never become ready
    checks = schema_checks(world.server)

    report = world.cycle()
    assert report.kind == au.FAILED and not report.ok  # the one report (exit 1)
    assert f"rolled back to {short(good)}" in report.message
    assert world.api_image() == world.pinned(good_digest)  # stage is on the good one
    assert world.rollouts.images == [
        world.pinned(good_digest),
        world.pinned(bad_digest),
        world.pinned(good_digest),
    ]
    assert world.state.broken[bad_digest].tag == short(bad)
    assert "did not finish" in world.state.broken[bad_digest].error
    assert world.state.broken[bad_digest].rollback.startswith(f"rolled back to {short(good)}")
    assert "failed to roll out" in world.state.last_error
    assert f"{STAGE_NS}.{short(bad)}" not in ledger(world.cluster.admin.core)
    assert len(checks) == 1  # the old image's own `migrate --check` ran first ...
    assert world.server.get("Job", checks[0], STAGE_NS) is None  # ... and was cleaned up
    assert world.state.deployed.digest == good_digest  # what auto-update deployed and saw run

    for _ in range(2):  # later cycles: not retried, not reported as a failure again
        writes = world.writes()
        again = world.cycle()
        assert again.kind == au.BROKEN and again.ok
        assert short(bad) in again.message and bad_digest[:19] in again.message
        assert world.writes() == writes
    assert len(world.rollouts.images) == 3
    rows = dict(stored.status_rows(world.state, {}, {}))
    assert rows["Broken (not retried)"].startswith(f"{short(bad)} (")

    fixed = world.origin.commit("the fix")
    fixed_digest = world.push(short(fixed), fixed)
    assert world.cycle().kind == au.DEPLOYED  # a newer image is tried
    assert world.api_image() == world.pinned(fixed_digest)


def test_a_failed_verify_is_a_failed_rollout_rolled_back_and_never_retried(world: World) -> None:
    """The new image rolls out, but its verify Job fails: auto-update marks the digest broken
    and rolls stage back to the release it ran (verified again); the next cycle skips it."""
    good, good_digest, bad, bad_digest = good_then_bad(world)
    world.cluster.kubelet.behave(
        f"verify-{short(bad)}", job="fail", logs=f"verify: ready ok\n{VERIFY_FAILED}\n"
    )
    checks = schema_checks(world.server)

    report = world.cycle()
    assert report.kind == au.FAILED and not report.ok
    assert "failed to roll out or verify and will not be retried" in report.message
    assert f"rolled back to {short(good)} ({good_digest[:19]})" in report.message
    broken = world.state.broken[bad_digest]
    assert (broken.tag, broken.commit) == (short(bad), bad)
    assert f"The verify Job verify-{short(bad)}-" in broken.error and VERIFY_FAILED in broken.error
    assert "deploy.rollback" not in broken.error  # this cycle rolled back already
    assert broken.rollback.startswith(f"rolled back to {short(good)}")
    assert world.state.last_error == report.message
    # Stage runs the previous release again, verified again; the bad one is never recorded.
    assert world.api_image() == world.pinned(good_digest)
    assert world.rollouts.images == [
        world.pinned(good_digest),
        world.pinned(bad_digest),
        world.pinned(good_digest),
    ]
    records = ledger(world.cluster.admin.core)
    assert f"{STAGE_NS}.{short(bad)}" not in records
    assert records[f"{STAGE_NS}.{short(good)}"].image_id == world.pinned(good_digest)
    last = verify.last(world.cluster.admin.core, STAGE_NS)
    assert last is not None and last.release == short(good) and last.passed
    assert len(checks) == 1  # the rollback's schema check of the good image
    assert world.state.deployed.digest == good_digest

    writes = world.writes()
    again = world.cycle()
    assert again.kind == au.BROKEN and again.ok
    assert again.message.startswith(
        f"{short(bad)} ({world.image}@{bad_digest[:19]}) failed to roll out or verify at "
    )
    assert world.writes() == writes  # not deployed again: nothing written at all
    assert world.api_image() == world.pinned(good_digest)
    assert world.state.seen.digest == bad_digest  # still the newest image of main
    rows = dict(stored.status_rows(world.state, {}, {}))
    assert VERIFY_FAILED in rows["Broken (not retried)"]


def test_a_person_changing_stage_by_hand_is_not_overridden(world: World) -> None:
    sha = world.origin.head()
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    apps = world.cluster.admin.apps
    api = apps.read_namespaced_deployment(names.API, STAGE_NS)  # e.g. deploy.rollback
    api.spec.template.spec.containers[0].image = world.pinned(f"sha256:{'e' * 64}")
    apps.replace_namespaced_deployment(names.API, STAGE_NS, api)
    report = world.cycle()
    assert report.kind == au.HELD and "changed by hand" in report.message
    assert world.api_image() == world.pinned(f"sha256:{'e' * 64}")
    assert len(world.rollouts.images) == 2  # auto-update's and the person's


# --- a concurrent manual deploy -> the cycle skips, never interleaves -------------------------


def test_a_cycle_skips_while_a_person_deploys_and_never_interleaves(world: World) -> None:
    sha = world.origin.head()
    world.push(short(sha), sha)
    admin = world.cluster.admin
    with lock.held(admin, STAGE_NS, "stage", "jane@laptop (deploy v1.3.0, pid 7)"):
        writes = len(world.server.writes())
        report = world.cycle()
        assert report.kind == au.SKIPPED
        assert "jane@laptop (deploy v1.3.0, pid 7) since" in report.message
        tried = world.server.writes()[writes:]
        assert tried and all("/leases" in w.path for w in tried)  # the lock only, nothing else
    assert "skipped: another deploy holds" in world.state.outcome
    assert world.server.all("Deployment", STAGE_NS) == []

    jane = world.cluster.grant("devops")
    seen_by_person: list[str] = []

    def person_tries_to_deploy(_: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.kind != "Deployment" or obj["metadata"]["name"] != names.API or seen_by_person:
            return
        try:  # while the cycle applies
            with lock.exclusive(jane, STAGE_NS, "stage", "deploy v1.3.0", wait=0):
                seen_by_person.append("got the lock")
        except Exit as refused:
            seen_by_person.append(str(refused.message))

    world.server.after_write.append(person_tries_to_deploy)
    assert world.cycle().kind == au.DEPLOYED
    assert len(seen_by_person) == 1
    assert "Another deploy holds desbordante-stage" in seen_by_person[0]
    assert "autoupdate" in seen_by_person[0]
    assert lock.current_holder(admin.coordination, STAGE_NS) is None  # released afterwards


# --- the tasks: enable (units, credentials, pull Secret), run, status, disable ----------------


class Systemctl(Context):
    """A Context that runs everything for real but records systemctl command lines instead."""

    # Declared on the class: Invoke's Context would otherwise keep them in its config (copies).
    systemctl: list[str] = []  # noqa: RUF012 - replaced per instance

    def __init__(self) -> None:
        super().__init__()
        self.systemctl = []

    def run(self, command: str, **kw: Any) -> Any:
        if command.startswith("systemctl "):
            self.systemctl.append(command)
            if " show " in command:
                return Result("UnitFileState=enabled\nNextElapseUSecRealtime=Thu 2026-11-26\n")
            return Result("")
        return super().run(command, **kw)


@pytest.fixture
def on_server(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, Systemctl]:
    """The settings of a server: state and unit directories under TMP_PATH, the image, the
    admin kubeconfig (the fake's connection); root. (state dir, unit dir, context)"""
    state_dir, unit_dir = tmp_path / "state", tmp_path / "units"
    unit_dir.mkdir()
    for key, value in {
        "IMAGE_NAME": world.image,
        "AUTOUPDATE_STATE_DIR": str(state_dir),
        "KUBECONFIG_PATH": str(tmp_path / "admin.kubeconfig"),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(autoupdate_units, "UNIT_DIR", unit_dir)
    monkeypatch.setattr(autoupdate_setup, "connect", lambda cfg: world.cluster.admin)
    monkeypatch.setattr(autoupdate_setup, "is_root", lambda: True)
    monkeypatch.setattr(console.console, "width", 1000)  # one table row per line
    return state_dir, unit_dir, Systemctl()


def test_enable_status_run_disable_through_the_tasks(
    world: World,
    on_server: tuple[Path, Path, Systemctl],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state_dir, unit_dir, c = on_server
    password_file = tmp_path / "token"
    password_file.write_text(world.registry.password)
    monkeypatch.setenv("REGISTRY_USERNAME", world.registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD_FILE", str(password_file))
    remote = str(world.origin.bare)

    tasks.enable(c, env="stage", interval="3m", branch="main", remote=remote)
    service = (unit_dir / "desbordante-autoupdate-stage.service").read_text()
    timer = (unit_dir / "desbordante-autoupdate-stage.timer").read_text()
    assert "autoupdate.run --once --env stage --branch main --remote" in service
    assert "OnUnitInactiveSec=180s" in timer
    assert world.registry.password not in service + timer
    assert c.systemctl == [
        "systemctl daemon-reload",
        "systemctl enable --now desbordante-autoupdate-stage.timer",
        "systemctl restart desbordante-autoupdate-stage.timer",
    ]
    creds = state_dir / "registry-stage.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert state_dir.stat().st_mode & 0o777 == 0o700  # root only, the mirror in it too
    assert (state_dir / "source-stage.git").stat().st_mode & 0o777 == 0o700
    assert stored.load_credentials(creds) == world.auth
    secret = world.server.get("Secret", PULL_SECRET, STAGE_NS)
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    out = capsys.readouterr().out
    assert "main is at" in out and "no image yet" in out
    assert world.registry.password not in out

    with pytest.raises(Exit, match="pass --once"):
        tasks.run(c, env="stage")
    tasks.status(c, env="stage")
    out = capsys.readouterr().out
    assert "enabled" in out and "every 180s" in out and "Thu 2026-11-26" in out

    tasks.disable(c, env="stage")
    assert not list(unit_dir.iterdir()) and not creds.exists()
    assert "systemctl disable --now desbordante-autoupdate-stage.timer" in c.systemctl
    tasks.status(c, env="stage")
    assert "not installed" in capsys.readouterr().out


def test_the_timers_cycle_keeps_its_state_file_and_exits_1_once_per_failure(
    world: World, on_server: tuple[Path, Path, Systemctl], capsys: pytest.CaptureFixture[str]
) -> None:
    """`autoupdate.run --once` as the timer runs it: the stored credentials, the state file
    (root only) after each cycle, exit 1 for the failed cycle only."""
    state_dir, _, c = on_server
    stored.save_credentials(state_dir / "registry-stage.json", world.auth)
    remote = str(world.origin.bare)
    good = world.origin.head()
    good_digest = world.push(short(good), good)

    def run() -> None:
        tasks.run(c, env="stage", once=True, branch="main", remote=remote, timeout=120)

    run()
    path = state_dir / "autoupdate-stage.json"
    assert path.stat().st_mode & 0o777 == 0o600
    saved = json.loads(path.read_text())
    assert saved["branch"] == "main" and saved["last_check"].endswith("Z")
    assert saved["outcome"].startswith(f"deployed: deployed {short(good)} (")
    assert saved["seen"] == {
        "commit": good,
        "tag": short(good),
        "digest": good_digest,
        "revision": good,
        "note": "",
    }
    assert (saved["deployed"]["digest"], saved["deployed"]["commit"]) == (good_digest, good)
    assert saved["broken"] == {} and saved["last_error"] == ""
    assert (state_dir / "source-stage.git" / "HEAD").is_file()  # its own mirror

    bad = world.origin.commit("a release that fails its verification")
    bad_digest = world.push(short(bad), bad)
    world.cluster.kubelet.behave(f"verify-{short(bad)}", job="fail", logs=f"{VERIFY_FAILED}\n")
    with pytest.raises(Exit) as failed:
        run()
    assert failed.value.code == 1
    state = stored.load_state(path)
    assert bad_digest in state.broken and state.outcome.startswith("failed: ")
    assert state.last_error and state.error_at == state.last_check
    assert world.api_image() == world.pinned(good_digest)

    run()  # the broken image is not tried again, and that is no failure
    state = stored.load_state(path)
    assert state.outcome.startswith(f"broken: {short(bad)} (")
    capsys.readouterr()
    tasks.status(c, env="stage")
    out = capsys.readouterr().out
    assert "Broken (not retried)" in out and short(bad) in out


def test_wrong_registry_credentials_install_nothing(
    world: World, on_server: tuple[Path, Path, Systemctl], monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir, unit_dir, c = on_server
    monkeypatch.setenv("REGISTRY_USERNAME", world.registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", "wrong")
    with pytest.raises(Exit, match=r"refused to show .* as ci \(HTTP 401\).*Nothing was installed"):
        tasks.enable(c, env="stage", remote=str(world.origin.bare))
    assert not list(unit_dir.iterdir()) and c.systemctl == []
    assert not (state_dir / "registry-stage.json").exists()  # not stored either
    assert world.server.get("Secret", PULL_SECRET, STAGE_NS) is None


# --- GHCR's way: the Bearer token challenge, answered by the real registry ---------------------


@pytest.fixture(scope="module")
def bearer_registry(
    running_registry: test_registry.Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[token_registry.TokenRegistry]:
    """A token-auth registry over the storage of the Basic one (images pushed there)."""
    with token_registry.running(
        tmp_path_factory.mktemp("token-registry"),
        running_registry.log.parent / "data",
        "robot",
        secrets.token_urlsafe(24),
    ) as running:
        yield running


def test_the_bearer_challenge_is_answered_like_ghcr_wants(
    running_registry: test_registry.Registry, bearer_registry: token_registry.TokenRegistry
) -> None:
    sha = "4" * 40
    name = f"{REPOSITORY}-{secrets.token_hex(4)}"
    creds = (running_registry.username, running_registry.password)
    digest = push_image(running_registry.address, creds, name, sha[:7], sha)
    service = bearer_registry.service
    auth = {"username": service.username, "password": service.password}
    with Registry(f"{bearer_registry.address}/{name}", auth) as client:
        info = client.image_info(sha[:7])
        assert client.image_info("missing") is None
    assert info is not None and (info.digest, info.revision) == (digest, sha)
    assert service.asked[-1] == {
        "scope": f"repository:{name}:pull",
        "service": token_registry.SERVICE,
    }

    wrong = {"username": service.username, "password": "not-it"}
    with (
        Registry(f"{bearer_registry.address}/{name}", wrong) as client,
        pytest.raises(RegistryError) as refused,
    ):
        client.image_info(sha[:7])
    assert "Token service 127.0.0.1 refused the credentials" in str(refused.value)
    assert "not-it" not in str(refused.value)
