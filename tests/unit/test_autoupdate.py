"""Auto-update without a registry: the systemd units it writes (MockContext records systemctl),
prod refused everywhere, root checks, state and credential files, status rows, the registry
login, `git ls-remote` parsing, errors as one line, and the deploy lock that `invoke deploy` and
bootstrap take (on the fake API server over HTTPS, so a cycle sees their Lease). Real cycles:
tests/integration/test_autoupdate_cycles.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
from invoke import Context, Exit, MockContext, Result
from kubernetes.client.exceptions import ApiException
from support.fakeapi.k3s import Cluster, prepare
from support.fakeapi.kinds import Kind
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster import bootstrap as bs
from desbordante_ops.cluster.autoupdate import cycle as au
from desbordante_ops.cluster.autoupdate import setup as autoupdate_setup
from desbordante_ops.cluster.autoupdate import statefile as stored
from desbordante_ops.cluster.autoupdate import units
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.release import lock
from desbordante_ops.core import plan
from desbordante_ops.core.poll import poll
from desbordante_ops.core.settings import load_config
from desbordante_ops.image import source
from desbordante_ops.image.registry import Registry
from desbordante_ops.tasks import autoupdate as tasks
from desbordante_ops.tasks import deploy as deploy_tasks

SHA = "3f2a9c1" + "0" * 33
OTHER = "b" * 40


def systemctl_context(show: str = "") -> MockContext:
    return MockContext(
        run={
            re.compile(r"^systemctl show .*"): Result(show),
            re.compile(r"^systemctl .*"): Result(""),
        },
        repeat=True,
    )


def lines(c: MockContext) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]  # type: ignore[attr-defined]


# --- prod stays a person's decision ---------------------------------------------------------


@pytest.mark.parametrize("name", ["enable", "disable", "status", "run"])
def test_every_autoupdate_task_refuses_prod_with_one_line(name: str) -> None:
    with pytest.raises(Exit) as refused:
        getattr(tasks, name)(MockContext(), env="prod")
    message = str(refused.value.message)
    assert "prod is never updated automatically" in message and "\n" not in message
    assert "invoke deploy --env prod --tag vX.Y.Z" in message


@pytest.mark.parametrize("name", ["enable", "disable"])
def test_enable_and_disable_need_root(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autoupdate_setup, "is_root", lambda: False)
    c = MockContext()  # nothing may run: any command would fail the test
    with pytest.raises(Exit, match=rf"run `sudo \.venv/bin/invoke autoupdate\.{name}`"):
        getattr(tasks, name)(c, env="stage")


def test_run_needs_once() -> None:
    with pytest.raises(Exit, match="pass --once"):
        tasks.run(MockContext(), env="stage")


# --- the units --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("2m", 120), ("90s", 90), ("1h", 3600), ("45", 45)])
def test_intervals(text: str, seconds: int) -> None:
    assert units.interval_seconds(text) == seconds


@pytest.mark.parametrize("text", ["10s", "2d", "-1m", "0", "2 m", "25h", "fast"])
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(Exit, match="--interval"):
        units.interval_seconds(text)


def test_the_service_runs_one_cycle_of_this_checkout_as_root(tmp_path: Path) -> None:
    text = units.service_unit(
        "stage",
        Path("/srv/desbordante ops"),
        Path("/srv/desbordante ops/.venv/bin/invoke"),
        ["--branch", "main", "--remote", "origin", "--timeout", "600"],
        {"KUBECONFIG_PATH": "/etc/rancher/k3s/k3s.yaml"},
        1500,
    )
    assert "Type=oneshot" in text and "TimeoutStartSec=1500" in text
    assert "WorkingDirectory=/srv/desbordante ops" in text
    assert (
        "ExecStart='/srv/desbordante ops/.venv/bin/invoke' autoupdate.run --once --env stage "
        "--branch main --remote origin --timeout 600"
    ) in text
    assert "Environment=KUBECONFIG_PATH=/etc/rancher/k3s/k3s.yaml" in text
    assert f"MemoryMax={units.MEMORY_MAX}" in text and "Nice=10" in text
    assert "PASSWORD" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_both_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` parses them as systemd will (a checkout path with a space, a
    percent sign and a dollar sign: specifiers and variables must stay literal)."""
    checkout = tmp_path / "desbordante ops 100% $HOME"
    invoke = checkout / ".venv" / "bin" / "invoke"
    invoke.parent.mkdir(parents=True)
    invoke.write_text("#!/bin/sh\n")
    invoke.chmod(0o755)
    service, timer = units.unit_paths(tmp_path, "stage")
    arguments = ["--branch", "main", "--remote", "https://github.com/o/r.git", "--timeout", "600"]
    service.write_text(
        units.service_unit("stage", checkout, invoke, arguments, {"KUBECONFIG_PATH": "/k"}, 1500)
    )
    timer.write_text(units.timer_unit("stage", 120))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(timer)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_timer_waits_the_interval_after_each_cycle() -> None:
    text = units.timer_unit("stage", 120)
    assert "OnUnitInactiveSec=120s" in text and f"OnActiveSec={units.FIRST_RUN}" in text
    assert "WantedBy=timers.target" in text


def test_install_writes_the_units_and_starts_the_timer(tmp_path: Path) -> None:
    c = systemctl_context()
    units.install(c, tmp_path, "stage", "S", "T")
    assert (tmp_path / "desbordante-autoupdate-stage.service").read_text() == "S"
    assert (tmp_path / "desbordante-autoupdate-stage.timer").stat().st_mode & 0o777 == 0o644
    assert lines(c) == [
        "systemctl daemon-reload",
        "systemctl enable --now desbordante-autoupdate-stage.timer",
        "systemctl restart desbordante-autoupdate-stage.timer",
    ]
    assert units.installed(tmp_path, "stage") == {}  # no ExecStart/OnUnitInactiveSec in S, T
    c = systemctl_context()
    assert units.remove(c, tmp_path, "stage") is True
    assert list(tmp_path.iterdir()) == []
    assert lines(c) == [
        "systemctl disable --now desbordante-autoupdate-stage.timer",
        "systemctl stop desbordante-autoupdate-stage.service",
        "systemctl daemon-reload",
    ]
    assert units.remove(systemctl_context(), tmp_path, "stage") is False


def test_a_failing_systemctl_is_one_line(tmp_path: Path) -> None:
    c = MockContext(run=Result(stderr="Failed to connect to bus\n", exited=1), repeat=True)
    with pytest.raises(Exit, match="systemctl daemon-reload failed: Failed to connect to bus"):
        units.install(c, tmp_path, "stage", "S", "T")


def test_timer_state_reads_systemctl_show() -> None:
    c = systemctl_context("UnitFileState=enabled\nActiveState=active\nNextElapseUSecRealtime=x\n")
    assert units.timer_state(c, "stage") == {
        "UnitFileState": "enabled",
        "ActiveState": "active",
        "NextElapseUSecRealtime": "x",
    }


# --- state, credentials, login ------------------------------------------------------------------


def test_state_round_trips_in_a_root_only_file(tmp_path: Path) -> None:
    state = stored.State(branch="main", outcome="deployed: x")
    state.broken["sha256:" + "a" * 64] = stored.Broken("3f2a9c1", SHA, "t", "did not finish", "ok")
    path = tmp_path / "state" / "autoupdate-stage.json"
    stored.save_state(path, state)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert stored.load_state(path) == state
    assert stored.load_state(tmp_path / "none.json") == stored.State()
    path.write_text("{not json")
    with pytest.raises(Exit, match="delete it to start afresh"):
        stored.load_state(path)


def test_credentials_are_stored_root_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "registry-stage.json"
    stored.save_credentials(path, {"username": "robot", "password": "tok"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert stored.load_credentials(path) == {"username": "robot", "password": "tok"}
    assert stored.load_credentials(tmp_path / "none") is None


def test_login_reads_the_password_file_or_asks_on_a_terminal(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ghp_x\n")
    env = {"REGISTRY_USERNAME": "robot", "REGISTRY_PASSWORD_FILE": str(token)}
    assert stored.registry_login(None, env) == {"username": "robot", "password": "ghp_x"}
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return "typed"

    answer = stored.registry_login("robot", {}, ask=ask, interactive=True)
    assert answer == {"username": "robot", "password": "typed"} and "robot" in asked[0]
    with pytest.raises(Exit, match="REGISTRY_PASSWORD_FILE"):
        stored.registry_login("robot", {}, interactive=False)
    assert stored.registry_login(None, {}) is None  # a public image
    with pytest.raises(Exit, match="no user"):
        stored.registry_login(None, {"REGISTRY_PASSWORD": "x"})


def test_status_rows_say_what_happened() -> None:
    state = stored.State(
        branch="main",
        last_check="2026-11-26T10:00:00Z",
        outcome="skipped: another deploy holds desbordante-stage (jane since T)",
        seen=stored.Seen(SHA, "3f2a9c1", "sha256:" + "c" * 64, SHA),
        last_error="boom",
        error_at="2026-11-25T10:00:00Z",
    )
    rows = dict(
        stored.status_rows(
            state,
            {"ExecStart": "invoke autoupdate.run", "OnUnitInactiveSec": "120s"},
            {"UnitFileState": "enabled", "ActiveState": "active", "NextElapseUSecRealtime": "soon"},
        )
    )
    assert rows["Timer"] == "enabled, active; every 120s after the last cycle"
    assert rows["Next run"] == "soon"
    assert rows["Newest image"] == "3f2a9c1 (sha256:cccccccccccc), revision 3f2a9c100000"
    assert rows["Deployed"] == "nothing yet"
    assert rows["Last error"] == "boom (at 2026-11-25T10:00:00Z)"
    assert rows["Outcome"].startswith("skipped: another deploy holds")


def test_status_rows_name_what_was_deployed_and_every_broken_image_oldest_first() -> None:
    bad, worse = "sha256:" + "b" * 64, "sha256:" + "d" * 64
    state = stored.State(
        seen=stored.Seen(commit=SHA, note="CI has not published it yet"),
        deployed=stored.Deployed("3f2a9c1", "sha256:" + "a" * 64, SHA, "2026-11-26T09:00:00Z"),
    )
    state.broken[worse] = stored.Broken("ddd1111", OTHER, "2026-11-26T11:00:00Z", "e2", "r2")
    state.broken[bad] = stored.Broken(
        "bbb2222", OTHER, "2026-11-26T10:00:00Z", "verify failed", "rolled back to 3f2a9c1"
    )
    rows = stored.status_rows(state, {}, {})
    found = dict(rows)
    assert found["Timer"].startswith("not installed (`sudo invoke autoupdate.enable")
    assert found["Runs"] == found["Next run"] == "-" and found["Last check"] == "never"
    assert found["Newest image"] == "none for 3f2a9c100000 (CI has not published it yet)"
    assert found["Deployed"] == "3f2a9c1 (sha256:aaaaaaaaaaaa) at 2026-11-26T09:00:00Z"
    assert [value for key, value in rows if key == "Broken (not retried)"] == [
        "bbb2222 (sha256:bbbbbbbbbbbb) at 2026-11-26T10:00:00Z: verify failed -> rolled back "
        "to 3f2a9c1",
        "ddd1111 (sha256:dddddddddddd) at 2026-11-26T11:00:00Z: e2 -> r2",
    ]


# --- the branch head --------------------------------------------------------------------------


def test_ls_remote_gives_the_head_and_its_release_tags_peeled() -> None:
    output = "\n".join(
        [
            f"{SHA}\trefs/heads/main",
            f"{'d' * 40}\trefs/tags/v1.2.0",  # annotated: the tag object ...
            f"{SHA}\trefs/tags/v1.2.0^{{}}",  # ... peels to the commit
            f"{SHA}\trefs/tags/v1.10.0",
            f"{SHA}\trefs/tags/v1.3.0-rc.1",  # not a release tag
            f"{OTHER}\trefs/tags/v2.0.0",  # another commit
        ]
    )
    head = source.parse_ls_remote(output, "main")
    assert head == source.Head("main", SHA, ("v1.10.0", "v1.2.0"))
    assert source.parse_ls_remote(output, "develop") is None
    assert source.short_shas(SHA) == [SHA[:n] for n in range(7, 13)]


@pytest.mark.parametrize("bad", ["", "-x", "a..b", "main/", "a b", "x;rm"])
def test_bad_branch_names_are_refused(bad: str) -> None:
    with pytest.raises(Exit, match="--branch"):
        source.check_branch(bad)


def test_a_remote_name_is_read_from_the_checkout_as_a_safe_directory() -> None:
    c = MockContext(run=Result("https://github.com/desbordante/desbordante-ops.git\n"))
    url = source.remote_url(c, Path("/srv/ops"), "origin")
    assert url == "https://github.com/desbordante/desbordante-ops.git"
    assert lines(c) == ["git -C /srv/ops -c safe.directory=/srv/ops remote get-url origin"]
    for given in ("https://example.com/x.git", "/srv/mirror.git", "git@github.com:o/r.git"):
        assert source.remote_url(MockContext(), Path("/srv/ops"), given) == given


def test_a_missing_branch_is_one_line() -> None:
    c = MockContext(run=Result(f"{SHA}\trefs/heads/other\n"))
    with pytest.raises(Exit, match="origin has no branch main"):
        source.branch_head(c, Path("."), "origin", "main")


# --- invoke deploy and bootstrap take the deploy lock ---------------------------------------------

STAGE = "desbordante-stage"
SHA_TAG = SHA[:7]
LEASE_ROW = f"the deploy lock (Lease {STAGE}/{lock.LEASE})"
T = TypeVar("T")


@pytest.fixture
def stage_kubeconfig(admin: Kube, admin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stage prepared on the HTTPS fake; the process settings point `invoke deploy` at it."""
    prepare(admin, "stage")
    for name in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG_PATH", str(admin_kubeconfig))
    return admin_kubeconfig


def lease_holders_at_apply(server: FakeApiServer) -> list[str | None]:
    """Who holds the deploy lock each time stage's api Deployment is written (filled as it
    happens; read from the server's store, no request)."""
    holders: list[str | None] = []

    def seen(_: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if (kind.kind, meta["name"], meta.get("namespace")) == ("Deployment", names.API, STAGE):
            holders.append(lease_holder(server))

    server.after_write.append(seen)
    return holders


def lease_holder(server: FakeApiServer) -> str | None:
    lease = server.get("Lease", lock.LEASE, STAGE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def written_deployments(server: FakeApiServer) -> list[str]:
    """The Deployment writes the server kept (a plan's server-side dry runs are not)."""
    return [
        w.path
        for w in server.writes()
        if "/deployments" in w.path and "dryRun=All" not in w.path and w.code < 400
    ]


def test_invoke_deploy_holds_the_lock_while_it_deploys(
    fake_api: FakeApiServer, stage_kubeconfig: Path
) -> None:
    holders = lease_holders_at_apply(fake_api)
    with plan.watching() as seen:
        deploy_tasks.deploy(Context(), env="stage", tag=SHA_TAG, timeout=30)
    ran = seen[0].ran
    assert ran[0] == ("take", LEASE_ROW)  # taken before anything else
    assert ("apply" in [action for action, _ in ran]) and len(holders) == 1
    assert holders[0] is not None and f"(deploy {SHA_TAG}, pid" in holders[0]
    assert lease_holder(fake_api) is None  # released at the end


def test_invoke_deploy_waits_for_a_held_lock_then_names_the_holder(
    fake_api: FakeApiServer, admin: Kube, stage_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock, "RETRY_SECONDS", 0.05)
    with (
        lock.held(admin, STAGE, "stage", "root@server (autoupdate 3f2a9c1)"),
        plan.watching() as seen,
        pytest.raises(Exit) as busy,
    ):
        deploy_tasks.deploy(Context(), env="stage", tag=SHA_TAG, timeout=1)  # waits 1 s
    message = str(busy.value.message)
    assert "Another deploy holds desbordante-stage (root@server (autoupdate 3f2a9c1) since" in (
        message
    )
    assert "after waiting 1 s" in message and "\n" not in message
    assert seen[0].rows[0][0] == "wait" and "held by root@server (autoupdate" in seen[0].rows[0][1]
    assert seen[0].ran == [seen[0].rows[0]]  # the wait failed: no step after it ran
    assert written_deployments(fake_api) == []  # never interleaved


def test_bootstrap_deploys_under_the_lock_too(
    fake_api: FakeApiServer,
    admin: Kube,
    stage_kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bootstrap's deploy step is the deploy plan: it waits for the holder (here, it lets go
    during the first wait) and deploys holding the lock itself."""
    holders = lease_holders_at_apply(fake_api)
    deployments_when_released: list[int] = []
    with ExitStack() as other:
        other.enter_context(lock.held(admin, STAGE, "stage", "root@server (autoupdate x)"))

        def poll_until_the_holder_lets_go(
            check: Callable[[], T],
            done: Callable[[T], bool],
            timeout: float,
            interval: float = 0.5,
            sleep: Callable[[float], None] = time.sleep,
        ) -> T:
            def first_wait_releases(_: float) -> None:
                if not deployments_when_released:
                    deployments_when_released.append(len(written_deployments(fake_api)))
                    other.close()

            return poll(check, done, timeout, interval, first_wait_releases)

        monkeypatch.setattr(lock, "poll", poll_until_the_holder_lets_go)
        cfg = load_config("stage", flags={"KUBECONFIG_PATH": str(stage_kubeconfig)}, environ={})
        run = bs.Run(c=Context(), cfg=cfg, tag=SHA_TAG, push=False, connection=admin)
        with plan.watching() as seen:
            bs._deploy(run)
    wait = seen[0].ran[0]
    assert wait[0] == "wait" and "held by root@server (autoupdate x)" in wait[1]
    assert deployments_when_released == [0]  # nothing applied while the other held it
    assert len(holders) == 1 and holders[0] is not None
    assert f"(deploy {SHA_TAG}, pid" in holders[0]  # its own lock while it applied
    assert run.changed and lease_holder(fake_api) is None


# --- a cycle's errors ---------------------------------------------------------------------------


def test_an_api_server_that_goes_away_mid_cycle_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k3s: Cluster
) -> None:
    def gone(*args: Any, **kw: Any) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(au, "decide", gone)
    state = stored.State()
    cfg = load_config("stage", environ={})
    with Registry(cfg.toolkit.IMAGE_NAME) as registry:  # never asked: decide fails first
        x = au.Cycle(MockContext(), cfg, k3s.admin, registry, tmp_path, "r", "main", lambda _: cfg)
        report = au.run_cycle(x, state)
    assert report.kind == au.ERROR and report.message == (
        "Kubernetes API call failed: HTTP 503 Service Unavailable"
    )
    assert state.last_error == report.message and state.outcome.startswith("error: ")
    assert state.branch == "main" and state.error_at == state.last_check != ""


def test_a_missing_branch_is_the_cycles_error_in_one_line(tmp_path: Path, k3s: Cluster) -> None:
    """A cycle whose remote has no such branch: an ERROR report (exit 1), nothing changed."""
    c = MockContext(run=Result(f"{SHA}\trefs/heads/other\n"), repeat=True)
    cfg = load_config("stage", environ={})
    mirror = tmp_path / "mirror.git"
    mirror.mkdir()
    (mirror / "HEAD").write_text("ref: refs/heads/main\n")  # an existing mirror: not created
    writes = len(k3s.server.writes())
    with Registry(cfg.toolkit.IMAGE_NAME) as registry:
        x = au.Cycle(c, cfg, k3s.admin, registry, mirror, "origin", "main", lambda _: cfg)
        report = au.run_cycle(x, stored.State())
    assert report.kind == au.ERROR and not report.ok
    assert report.message.startswith("origin has no branch main") and "\n" not in report.message
    assert len(k3s.server.writes()) == writes


def test_a_cycle_report_is_a_failure_only_when_it_failed() -> None:
    assert not au.Report(au.FAILED, "x").ok and not au.Report(au.ERROR, "x").ok
    assert all(
        au.Report(kind, "x").ok
        for kind in (au.DEPLOYED, au.CURRENT, au.WAITING, au.SKIPPED, au.BROKEN, au.HELD)
    )
    state = stored.State(last_check="t")
    au.record(state, au.Report(au.ERROR, "Kubernetes API is not reachable"))
    assert (state.last_error, state.error_at) == ("Kubernetes API is not reachable", "t")
    assert json.loads(state.to_json())["outcome"] == "error: Kubernetes API is not reachable"
    au.record(state, au.Report(au.CURRENT, "stage runs x"))
    assert state.outcome == "current: stage runs x"
    assert state.last_error == "Kubernetes API is not reachable"  # kept until the next failure
