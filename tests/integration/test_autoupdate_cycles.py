"""Stage auto-update: real cycles against a REAL registry and a REAL git remote.

The registry is Debian's `docker-registry` on loopback with htpasswd (tests/support/registry.py,
installed when missing); images are pushed into it with the registry HTTP API
(tests/support/oci.py: config with the revision label, one empty layer, a manifest). The branch
lives in a local bare git repository with commits of this repository's k8s/ and env/. The
cluster is the in-memory API fakes of the deploy tests behind a kubectl whose apply lands on
them (tests/support/fake_stage.py); `kubectl kustomize` renders for real.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, Result
from support import registry as test_registry
from support import token_registry
from support.dockerd import Unavailable
from support.fake_kube import FakeClock
from support.fake_stage import Origin, Stage, git, stage_cluster
from support.oci import push_image

from desbordante_ops.cluster import autoupdate as au
from desbordante_ops.cluster import autoupdate_setup as setup
from desbordante_ops.cluster import autoupdate_state as stored
from desbordante_ops.cluster import autoupdate_units as units
from desbordante_ops.cluster import lock
from desbordante_ops.cluster.releases import check_prod_rules, ledger
from desbordante_ops.core.settings import load_config
from desbordante_ops.image.registry import Registry, RegistryError
from desbordante_ops.tasks import autoupdate as tasks

STAGE_NS = "desbordante-stage"
REPOSITORY = "desbordante/backend"
USER = "ci"

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
    stage: Stage
    state: stored.State
    clock: FakeClock

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.registry.username, "password": self.registry.password}

    def push(self, tag: str, revision: str) -> str:
        creds = (self.registry.username, self.registry.password)
        return push_image(self.registry.address, creds, self.repository, tag, revision)

    @property
    def repository(self) -> str:
        return self.image.partition("/")[2]

    def settings(self, root: Path | None = None) -> Any:
        flags = {"IMAGE_NAME": self.image}
        if root is None:
            return load_config("stage", flags=flags, environ={})
        return load_config("stage", flags=flags, environ={}, root=root)

    def cycle(self) -> au.Report:
        """One cycle, exactly as `autoupdate.run --once` runs it (fresh registry client)."""
        with Registry(self.image, self.auth) as client:
            x = au.Cycle(
                self.stage,
                self.settings(),
                self.stage.k,
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
        return str(self.stage.k.apps.image)


@pytest.fixture
def world(running_registry: test_registry.Registry, tmp_path: Path) -> World:
    origin = Origin(tmp_path)
    origin.commit("the first release of the test")
    # One repository per test: tags of other tests never mix in.
    image = f"{running_registry.address}/{REPOSITORY}-{secrets.token_hex(4)}"
    return World(
        origin=origin,
        mirror=tmp_path / "state" / "source-stage.git",
        registry=running_registry,
        image=image,
        stage=Stage(stage_cluster()),
        state=stored.State(),
        clock=FakeClock(),
    )


def short(sha: str) -> str:
    return sha[:7]


def head(world: World) -> str:
    return git(world.origin.work, "rev-parse", "HEAD")


# --- a new image appears -> the next cycle deploys it ----------------------------------------


def test_a_new_image_of_main_is_deployed_pinned_by_digest_with_its_own_manifests(
    world: World,
) -> None:
    first = head(world)
    report = world.cycle()
    assert report.kind == au.WAITING and "CI has not published it yet" in report.message
    assert world.stage.applied == []

    digest = world.push(short(first), first)
    report = world.cycle()
    assert report.kind == au.DEPLOYED, report.message
    assert world.api_image() == f"{world.image}@{digest}"  # pinned, never the tag
    entry = ledger(world.stage.k.core)[f"{STAGE_NS}.{short(first)}"]
    assert entry.image_id == f"{world.image}@{digest}"
    assert (world.state.deployed.tag, world.state.deployed.digest) == (short(first), digest)
    assert world.state.deployed.commit == first

    env_file = (world.origin.work / "env" / "stage.env").read_text()
    second = world.origin.commit(
        "debug logging", {"env/stage.env": env_file.replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG")}
    )
    report = world.cycle()  # the commit is there, its image not yet: stage stays
    assert report.kind == au.WAITING and short(second) in report.message
    assert world.api_image() == f"{world.image}@{digest}"

    newer = world.push(short(second), second)
    report = world.cycle()
    assert report.kind == au.DEPLOYED, report.message
    assert world.api_image() == f"{world.image}@{newer}"
    config = next(d for d in world.stage.docs if d["kind"] == "ConfigMap")
    assert config["data"]["LOG_LEVEL"] == "DEBUG"  # the manifests of that very commit
    assert len(world.stage.applied) == 2


def test_a_release_tag_at_the_head_is_deployed_under_its_tag_and_prod_accepts_it(
    world: World,
) -> None:
    sha = head(world)
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    world.origin.tag("v1.4.0")
    release_digest = world.push("v1.4.0", sha)
    report = world.cycle()
    assert report.kind == au.DEPLOYED and "v1.4.0" in report.message
    pinned = f"{world.image}@{release_digest}"
    assert ledger(world.stage.k.core)[f"{STAGE_NS}.v1.4.0"].image_id == pinned
    # The person's prod deploy: the gate finds the release stage ran, by digest.
    gate = check_prod_rules(
        world.stage, world.stage.k.core, STAGE_NS, "v1.4.0", "x", yes=True, confirm=input
    )
    assert gate == pinned
    assert world.cycle().kind == au.CURRENT


# --- no new image -> nothing happens, status says so ------------------------------------------


def test_no_new_image_means_nothing_happens_and_status_says_so(world: World) -> None:
    sha = head(world)
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    commands_before = len(world.stage.applied)
    for _ in range(2):
        report = world.cycle()
        assert report.kind == au.CURRENT and "up to date" in report.message
    assert len(world.stage.applied) == commands_before
    rows = dict(stored.status_rows(world.state, {}, {}))
    assert rows["Outcome"].startswith("current: stage runs ")
    assert rows["Newest image"].startswith(f"{short(sha)} (")
    assert rows["Deployed"].startswith(f"{short(sha)} (")
    assert rows["Last error"] == "-"


def test_an_image_not_built_from_the_commit_is_skipped_with_a_note(world: World) -> None:
    sha = head(world)
    world.push(short(sha), "0" * 40)  # a tag that looks right, another revision label
    report = world.cycle()
    assert report.kind == au.WAITING
    assert f"{short(sha)} was built from 000000000000" in report.message
    assert "not CI's image" in world.state.seen.note
    assert world.stage.applied == []


# --- a broken image -> rollback, reported once, not retried ------------------------------------


def test_a_broken_image_is_rolled_back_reported_once_and_not_retried(world: World) -> None:
    good = head(world)
    good_digest = world.push(short(good), good)
    assert world.cycle().kind == au.DEPLOYED
    bad = world.origin.commit("a release whose pods never become ready")
    bad_digest = world.push(short(bad), bad)
    world.stage.broken.add(bad_digest)

    report = world.cycle()
    assert report.kind == au.FAILED and not report.ok  # the one report (exit 1)
    assert f"rolled back to {short(good)}" in report.message
    assert world.api_image() == f"{world.image}@{good_digest}"  # stage is on the good one
    assert world.stage.applied == [
        f"{world.image}@{good_digest}",
        f"{world.image}@{bad_digest}",
        f"{world.image}@{good_digest}",
    ]
    assert world.state.broken[bad_digest].tag == short(bad)
    assert "did not finish" in world.state.broken[bad_digest].error
    assert "failed to roll out" in world.state.last_error
    check_jobs = [name for name in world.stage.k.batch.created if name.startswith("schema-check")]
    assert len(check_jobs) == 1  # the old image's own `migrate --check` ran first

    for _ in range(2):  # later cycles: not retried, not reported as a failure again
        again = world.cycle()
        assert again.kind == au.BROKEN and again.ok
    assert len(world.stage.applied) == 3
    rows = dict(stored.status_rows(world.state, {}, {}))
    assert rows["Broken (not retried)"].startswith(f"{short(bad)} (")

    fixed = world.origin.commit("the fix")
    fixed_digest = world.push(short(fixed), fixed)
    assert world.cycle().kind == au.DEPLOYED  # a newer image is tried
    assert world.api_image() == f"{world.image}@{fixed_digest}"


def test_a_person_changing_stage_by_hand_is_not_overridden(world: World) -> None:
    sha = head(world)
    world.push(short(sha), sha)
    assert world.cycle().kind == au.DEPLOYED
    world.stage.k.apps.image = f"{world.image}@sha256:{'e' * 64}"  # e.g. deploy.rollback
    report = world.cycle()
    assert report.kind == au.HELD and "changed by hand" in report.message
    assert len(world.stage.applied) == 1


# --- a concurrent manual deploy -> the cycle skips, never interleaves -------------------------


def test_a_cycle_skips_while_a_person_deploys_and_never_interleaves(world: World) -> None:
    sha = head(world)
    world.push(short(sha), sha)
    coordination = world.stage.k.coordination
    with lock.held(coordination, STAGE_NS, "jane@laptop (deploy v1.3.0, pid 7)"):
        report = world.cycle()
        assert report.kind == au.SKIPPED
        assert "jane@laptop (deploy v1.3.0, pid 7) since" in report.message
        assert world.stage.applied == []  # nothing rendered, nothing applied
    assert "skipped: another deploy holds" in world.state.outcome

    seen_by_person: list[str] = []

    def person_tries_to_deploy() -> None:  # while the cycle applies
        try:
            with lock.exclusive(coordination, STAGE_NS, "deploy v1.3.0", wait=0):
                seen_by_person.append("got the lock")
        except Exit as refused:
            seen_by_person.append(str(refused.message))

    world.stage.during_apply = person_tries_to_deploy
    assert world.cycle().kind == au.DEPLOYED
    assert (
        len(seen_by_person) == 1 and "Another deploy holds desbordante-stage" in (seen_by_person[0])
    )
    assert "autoupdate" in seen_by_person[0]
    assert lock.current_holder(coordination, STAGE_NS) is None  # released afterwards


# --- the tasks: enable (units, credentials, pull Secret), status, disable ----------------------


class Systemctl(Stage):
    """Stage that also records systemctl command lines instead of running them."""

    systemctl: list[str] = []  # noqa: RUF012 - replaced per instance

    def __init__(self, k: Any) -> None:
        super().__init__(k)
        self.systemctl = []

    def run(self, command: str, **kw: Any) -> Any:
        if command.startswith("systemctl "):
            self.systemctl.append(command)
            if " show " in command:
                return Result("UnitFileState=enabled\nNextElapseUSecRealtime=Thu 2026-11-26\n")
            return Result("")
        return super().run(command, **kw)


def test_enable_status_run_disable_through_the_tasks(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state_dir, unit_dir = tmp_path / "state", tmp_path / "units"
    unit_dir.mkdir()
    password_file = tmp_path / "token"
    password_file.write_text(world.registry.password)
    for key, value in {
        "IMAGE_NAME": world.image,
        "AUTOUPDATE_STATE_DIR": str(state_dir),
        "KUBECONFIG_PATH": str(tmp_path / "admin.kubeconfig"),
        "REGISTRY_USERNAME": world.registry.username,
        "REGISTRY_PASSWORD_FILE": str(password_file),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    monkeypatch.setattr(units, "UNIT_DIR", unit_dir)
    monkeypatch.setattr(setup.kube, "connect", lambda cfg: world.stage.k)
    c = Systemctl(world.stage.k)
    remote = str(world.origin.bare)

    tasks.enable(c, env="stage", interval="3m", branch="main", remote=remote)
    service = (unit_dir / "desbordante-autoupdate-stage.service").read_text()
    timer = (unit_dir / "desbordante-autoupdate-stage.timer").read_text()
    assert "autoupdate.run --once --env stage --branch main --remote" in service
    assert "OnUnitInactiveSec=180s" in timer
    assert world.registry.password not in service + timer
    assert c.systemctl[:2] == [
        "systemctl daemon-reload",
        "systemctl enable --now desbordante-autoupdate-stage.timer",
    ]
    creds = state_dir / "registry-stage.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert stored.load_credentials(creds) == world.auth
    secret = world.stage.k.core.secrets[(STAGE_NS, "desbordante-registry")]
    assert secret.type == "kubernetes.io/dockerconfigjson"  # pods can pull the private image
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


def test_wrong_registry_credentials_install_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    monkeypatch.setenv("IMAGE_NAME", world.image)
    monkeypatch.setenv("AUTOUPDATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("REGISTRY_USERNAME", world.registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", "wrong")
    monkeypatch.setattr(units, "UNIT_DIR", unit_dir)
    monkeypatch.setattr(setup.kube, "connect", lambda cfg: world.stage.k)
    with pytest.raises(Exit, match=r"refused to show .* as ci \(HTTP 401\).*Nothing was installed"):
        tasks.enable(Systemctl(world.stage.k), env="stage", remote=str(world.origin.bare))
    assert not list(unit_dir.iterdir())
    assert not (tmp_path / "state" / "registry-stage.json").exists()  # not stored either
    assert (STAGE_NS, "desbordante-registry") not in world.stage.k.core.secrets


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
