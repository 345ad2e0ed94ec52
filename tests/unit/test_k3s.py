"""k3s.install / uninstall / registry and images.load on this host, with invoke.MockContext for
the commands (nothing is run) and every host path of the module under a tmp directory: the
plans, that each dry run is the plan the real run then executes, checksums before anything
runs, and the commands of images.load."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from invoke import Exit, MockContext, Result
from support.fake_engine import FakeDocker, FakeImage
from support.mockrun import calls
from support.mockrun import commands as run_commands
from support.plans import plan_lines, snapshot

from desbordante_ops.cluster.host import k3s
from desbordante_ops.core import plan
from desbordante_ops.tasks import k3s as k3s_tasks

BINARY = b"\x7fELF pretend k3s binary"
SCRIPT = b"#!/bin/sh\necho pretend install.sh\n"
ACTIVE_CMD = "systemctl is-active --quiet k3s"


def version_cmd() -> str:
    return f"{k3s.BIN_PATH} --version"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_lock(binary_sha: str = sha(BINARY), script_sha: str = sha(SCRIPT)) -> k3s.Lock:
    return k3s.Lock(
        version="v1.36.4+k3s1",
        binary_url="https://example.invalid/k3s",
        binary_sha256=binary_sha,
        script_urls=("https://example.invalid/commit/install.sh",),
        script_sha256=script_sha,
    )


class FakeDownloads:
    """Serves fixed bytes per URL and records what was fetched."""

    def __init__(self, content: dict[str, bytes]) -> None:
        self.content = content
        self.fetched: list[str] = []

    def __call__(self, url: str, dest: Path) -> None:
        self.fetched.append(url)
        dest.write_bytes(self.content[url])


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every host path of the module into TMP_PATH; pretend to be root."""
    monkeypatch.setattr(k3s, "BIN_PATH", tmp_path / "usr/local/bin/k3s")
    monkeypatch.setattr(k3s, "CONFIG_PATH", tmp_path / "etc/rancher/k3s/config.yaml")
    monkeypatch.setattr(k3s, "K3S_KUBECONFIG", tmp_path / "etc/rancher/k3s/k3s.yaml")
    monkeypatch.setattr(k3s, "REGISTRIES_PATH", tmp_path / "etc/rancher/k3s/registries.yaml")
    monkeypatch.setattr(k3s, "UNINSTALL_SCRIPT", tmp_path / "usr/local/bin/k3s-uninstall.sh")
    monkeypatch.setattr(k3s, "is_root", lambda: True)
    monkeypatch.delenv("SUDO_UID", raising=False)
    return tmp_path


def k3s_wrote_its_kubeconfig() -> Path:
    """The admin kubeconfig install.sh leaves (the MockContext cannot write it)."""
    k3s.K3S_KUBECONFIG.parent.mkdir(parents=True, exist_ok=True)
    k3s.K3S_KUBECONFIG.write_text("apiVersion: v1\nkind: Config\n")
    return k3s.K3S_KUBECONFIG


def dry_then_real(run: Callable[[bool], object]) -> tuple[plan.Seen, plan.Seen]:
    """RUN(dry_run=True), then RUN(dry_run=False) on the same state: what each printed and ran."""
    with plan.watching() as seen:
        run(True)
        run(False)
    dry, real = seen
    return dry, real


def fresh_host_context() -> MockContext:
    return MockContext(
        run={
            re.compile(r".*--version$"): Result("", exited=127),
            ACTIVE_CMD: Result("", exited=3),
            re.compile(r"^sh .*install\.sh$"): Result("[INFO] done"),
        },
        repeat=True,
    )


def test_lock_in_repo_pins_version_and_real_looking_checksums() -> None:
    for arch in ("amd64", "arm64"):
        lock = k3s.load_lock(arch=arch)
        assert re.fullmatch(r"v1\.\d+\.\d+\+k3s\d+", lock.version)
        assert k3s.SHA256_RE.match(lock.binary_sha256)
        assert k3s.SHA256_RE.match(lock.script_sha256)
        assert lock.version.replace("+", "%2B") in lock.binary_url
        assert all(
            u.startswith("https://raw.githubusercontent.com/k3s-io/k3s/") for u in lock.script_urls
        )


def test_placeholder_checksum_refuses_to_install(tmp_path: Path) -> None:
    text = k3s.LOCK_PATH.read_text()
    lock_file = tmp_path / "k3s.lock"
    lock_file.write_text(re.sub(r'(asset = "k3s"\nsha256 = )"[0-9a-f]{64}"', r'\1"FILL-ME"', text))
    with pytest.raises(Exit, match="not filled in"):
        k3s.load_lock(lock_file, arch="amd64")


def test_install_verifies_checksums_before_running_anything(host: Path) -> None:
    lock = make_lock()
    downloads = FakeDownloads({lock.binary_url: BINARY, lock.script_urls[0]: SCRIPT})
    kubeconfig = k3s_wrote_its_kubeconfig()
    c = fresh_host_context()

    ran = k3s.run_install(c, lock, host / "home/.kube/config", dry_run=False, download=downloads)

    assert [step.action for step in ran] == [
        "download", "download", "install", "write", "run", "write",
    ]  # fmt: skip
    commands = run_commands(c)
    assert commands[0] == version_cmd()  # read-only probe, then the verified script:
    assert len(commands) == 2
    assert commands[-1].startswith("sh ") and commands[-1].endswith("install.sh")
    (script_call,) = [call for call in calls(c) if call.args[0].startswith("sh ")]
    env = script_call.kwargs["env"]
    assert env["INSTALL_K3S_SKIP_DOWNLOAD"] == "true"
    assert env["INSTALL_K3S_VERSION"] == lock.version
    assert not any(key.startswith("K3S_TOKEN") for key in env)
    assert downloads.fetched == [lock.binary_url, lock.script_urls[0]]
    assert k3s.BIN_PATH.read_bytes() == BINARY
    assert stat.S_IMODE(k3s.BIN_PATH.stat().st_mode) == 0o755
    config = yaml.safe_load(k3s.CONFIG_PATH.read_text())
    assert config["secrets-encryption"] is True
    assert "disable" not in config  # Traefik kept
    copied = host / "home/.kube/config"
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    assert copied.read_text() == kubeconfig.read_text()


def test_install_dry_run_is_the_plan_the_real_install_runs(host: Path) -> None:
    lock = make_lock()
    downloads = FakeDownloads({lock.binary_url: BINARY, lock.script_urls[0]: SCRIPT})
    k3s_wrote_its_kubeconfig()
    c = fresh_host_context()
    target = host / "home/.kube/config"
    before = snapshot(host)

    def install(dry_run: bool) -> None:
        k3s.run_install(c, lock, target, dry_run, download=downloads)
        if dry_run:  # nothing fetched, written or run by the dry run
            assert downloads.fetched == [] and snapshot(host) == before
            assert run_commands(c) == [version_cmd()]

    dry, real = dry_then_real(install)
    assert dry.dry_run and not real.dry_run
    assert dry.rows == real.rows
    assert dry.ran == [] and real.ran == real.runnable == dry.runnable == real.rows
    assert [action for action, _ in real.ran] == [
        "download", "download", "install", "write", "run", "write",
    ]  # fmt: skip
    assert real.ran[-1][1].startswith(f"{target} (mode 0600)")
    assert target.is_file() and k3s.BIN_PATH.is_file()


@pytest.mark.parametrize("bad", ["binary", "script"])
def test_checksum_mismatch_runs_nothing_and_installs_nothing(host: Path, bad: str) -> None:
    lock = make_lock()
    content = {lock.binary_url: BINARY, lock.script_urls[0]: SCRIPT}
    key = lock.binary_url if bad == "binary" else lock.script_urls[0]
    content[key] = content[key] + b"tampered"
    c = fresh_host_context()
    with pytest.raises(Exit, match="Checksum verification failed, nothing was run"):
        k3s.run_install(c, lock, None, dry_run=False, download=FakeDownloads(content))
    commands = run_commands(c)
    assert commands == [version_cmd()]  # only the read-only version probe ran
    assert not k3s.BIN_PATH.exists()
    assert not k3s.CONFIG_PATH.exists()


def test_second_script_url_is_used_when_first_does_not_match(host: Path) -> None:
    lock = make_lock()
    lock = k3s.Lock(
        **{**lock.__dict__, "script_urls": ("https://a.invalid/x", "https://b.invalid/y")}
    )
    downloads = FakeDownloads(
        {lock.binary_url: BINARY, "https://a.invalid/x": b"other", "https://b.invalid/y": SCRIPT}
    )
    dest = host / "install.sh"
    used = k3s.fetch_verified(lock.script_urls, lock.script_sha256, dest, downloads)
    assert used == "https://b.invalid/y"
    assert dest.read_bytes() == SCRIPT


def test_same_version_running_is_nothing_to_do(host: Path) -> None:
    lock = make_lock()
    c = MockContext(
        run={version_cmd(): Result("k3s version v1.36.4+k3s1 (abcdef12)\n"), ACTIVE_CMD: Result("")}
    )
    downloads = FakeDownloads({})
    with plan.watching() as seen:
        assert k3s.run_install(c, lock, None, dry_run=False, download=downloads) == []
    assert seen[0].rows == [("keep", "k3s v1.36.4+k3s1 is installed and running: nothing to do")]
    assert downloads.fetched == []


def test_without_root_a_clear_message_and_no_download(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k3s, "is_root", lambda: False)
    downloads = FakeDownloads({})
    c = fresh_host_context()
    with pytest.raises(Exit, match=re.escape("needs root: run `sudo -E invoke k3s.install`")):
        k3s.run_install(c, make_lock(), None, dry_run=False, download=downloads)
    assert downloads.fetched == [] and run_commands(c) == [version_cmd()]
    assert not k3s.BIN_PATH.exists()


@pytest.mark.usefixtures("wide_console")
def test_install_dry_run_lists_downloads_files_and_the_script_and_changes_nothing(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(k3s, "is_root", lambda: False)
    monkeypatch.setattr(k3s_tasks, "load_lock", make_lock)
    target = host / "home/.kube/config"
    target.parent.mkdir(parents=True)
    target.write_text("someone else's contexts")
    before = snapshot(host)
    c = fresh_host_context()
    k3s_tasks.install(c, dry_run=True, kubeconfig=str(target))
    assert snapshot(host) == before
    assert run_commands(c) == [version_cmd()]  # not installed: nothing else to ask
    lock = make_lock()
    assert plan_lines(capsys.readouterr().out) == [
        "│ 1 │ needs root │ not root: the real run stops here; run `sudo -E invoke k3s.install` │",
        f"│ 2 │ download │ {lock.binary_url} (sha256 {lock.binary_sha256} checked first) │",
        f"│ 3 │ download │ install.sh from {lock.script_urls[0]} (sha256 {lock.script_sha256}) │",
        f"│ 4 │ install │ {k3s.BIN_PATH} (mode 0755) │",
        f"│ 5 │ write │ {k3s.CONFIG_PATH} (mode 0600): k3s server config (secrets-encryption, "
        "kubeconfig 0600) │",
        "│ 6 │ run │ INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION=v1.36.4+k3s1 "
        "INSTALL_K3S_EXEC=server sh install.sh (installs and starts the k3s service) │",
        f"│ 7 │ write │ {target.with_name('k3s.yaml')} (mode 0600): the admin kubeconfig "
        f"({target} exists and is kept; set KUBECONFIG_PATH) │",
    ]


@pytest.mark.usefixtures("wide_console")
def test_install_dry_run_of_the_running_version_has_nothing_to_do(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(k3s_tasks, "load_lock", make_lock)
    c = MockContext(run={version_cmd(): Result("k3s version v1.36.4+k3s1 (x)"), ACTIVE_CMD: ""})
    k3s_tasks.install(c, dry_run=True)
    assert run_commands(c) == [version_cmd(), ACTIVE_CMD]
    assert plan_lines(capsys.readouterr().out) == [
        "│ 1 │ keep │ k3s v1.36.4+k3s1 is installed and running: nothing to do │"
    ]


def installed_uninstall_script() -> Path:
    script = k3s.UNINSTALL_SCRIPT
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("#!/bin/sh\nexit 99\n")
    return script


@pytest.mark.usefixtures("wide_console")
def test_uninstall_dry_run_asks_nothing_and_runs_no_script(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = installed_uninstall_script()
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked during a dry run"))
    before = snapshot(host)
    c = MockContext(run={version_cmd(): Result("k3s version v1.30.0+k3s1 (abc)")})
    k3s_tasks.uninstall(c, dry_run=True)
    assert snapshot(host) == before and run_commands(c) == [version_cmd()]
    rows = plan_lines(capsys.readouterr().out)
    assert rows[:2] == [
        "│ 1 │ ask │ type 'uninstall' to confirm (--yes skips it) │",
        f"│ 2 │ run │ {script}: removes k3s v1.30.0+k3s1 │",
    ]
    assert rows[2].startswith("│ 3 │ delete │ the k3s service") and "every volume" in rows[2]
    monkeypatch.setattr(k3s, "UNINSTALL_SCRIPT", host / "absent.sh")
    k3s_tasks.uninstall(MockContext(), yes=True, dry_run=True)
    assert plan_lines(capsys.readouterr().out) == [
        "│ 1 │ keep │ k3s is not installed: nothing to do │"
    ]


def test_uninstall_dry_run_is_the_plan_the_real_uninstall_runs(host: Path) -> None:
    script = installed_uninstall_script()
    c = MockContext(
        run={version_cmd(): Result("k3s version v1.30.0+k3s1 (abc)"), str(script): Result("")},
        repeat=True,
    )
    asked: list[str] = []

    def confirm(prompt: str) -> str:
        asked.append(prompt)
        return "uninstall"

    def uninstall(dry_run: bool) -> None:
        plan.execute(k3s.uninstall_plan(c, yes=False, confirm=confirm), dry_run)
        if dry_run:
            assert asked == [] and run_commands(c) == [version_cmd()]

    dry, real = dry_then_real(uninstall)
    assert dry.rows == real.rows and dry.ran == []
    assert real.ran == real.runnable == dry.runnable
    assert real.ran == [
        ("ask", "type 'uninstall' to confirm (--yes skips it)"),
        ("run", f"{script}: removes k3s v1.30.0+k3s1"),
    ]
    assert len(asked) == 1 and "every volume" in asked[0]
    assert run_commands(c) == [version_cmd(), version_cmd(), str(script)]


def test_uninstall_not_confirmed_removes_nothing(host: Path) -> None:
    script = installed_uninstall_script()
    c = MockContext(run={version_cmd(): Result("k3s version v1.30.0+k3s1 (abc)")}, repeat=True)
    with pytest.raises(Exit, match=r"Not confirmed; nothing was removed\."):
        plan.execute(k3s.uninstall_plan(c, yes=False, confirm=lambda prompt: "yes"))
    assert str(script) not in run_commands(c)


def test_uninstall_without_root_stops_before_asking(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed_uninstall_script()
    monkeypatch.setattr(k3s, "is_root", lambda: False)
    c = MockContext(run={version_cmd(): Result("k3s version v1.30.0+k3s1 (abc)")}, repeat=True)
    with pytest.raises(Exit, match=re.escape("run `sudo -E invoke k3s.uninstall`.")):
        plan.execute(k3s.uninstall_plan(c, yes=False, confirm=lambda p: pytest.fail("asked")))


@pytest.mark.usefixtures("wide_console")
def test_registry_dry_run_leaves_registries_yaml_and_k3s_alone(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = k3s.REGISTRIES_PATH
    path.parent.mkdir(parents=True)
    path.write_text(k3s.registries_yaml("ghcr.io", "http://10.0.0.9:5000"))
    before = snapshot(host)
    c = MockContext(run={})  # any command would fail it
    k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://127.0.0.1:5000", dry_run=True)
    assert snapshot(host) == before and run_commands(c) == []
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ replace │ {path} (mode 0600): k3s pulls ghcr.io images from "
        "http://127.0.0.1:5000 │",
        "│ 2 │ run │ systemctl restart k3s │",
    ]
    k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://10.0.0.9:5000", dry_run=True)
    assert plan_lines(capsys.readouterr().out) == [
        f"│ 1 │ keep │ {path} already mirrors ghcr.io to http://10.0.0.9:5000: nothing to do │"
    ]


def test_unpinned_version_flag_is_refused() -> None:
    with pytest.raises(Exit, match="is not pinned"):
        k3s_tasks.install(MockContext(), version="v1.30.0+k3s1")


def test_server_config_is_merged_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: server1\n")
    assert k3s.write_server_config(path) is True
    data = yaml.safe_load(path.read_text())
    assert data == {"node-name": "server1", **k3s.SERVER_CONFIG}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert k3s.write_server_config(path) is False


def test_existing_different_kubeconfig_is_not_overwritten(host: Path) -> None:
    source = host / "k3s.yaml"
    source.write_text("new")
    target = host / "home/.kube/config"
    target.parent.mkdir(parents=True)
    target.write_text("someone else's contexts")
    written = k3s.copy_kubeconfig(target, source)
    assert written == target.with_name("k3s.yaml")
    assert target.read_text() == "someone else's contexts"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


INSPECT = re.compile(r".*crictl inspecti.*")
LABEL = re.compile(r".*ctr -n k8s\.io images label .*")


def load_context(inspect: Result) -> MockContext:
    return MockContext(
        run={
            INSPECT: inspect,
            re.compile(r".*ctr -n k8s\.io images import .*\.tar$"): Result(""),
            LABEL: Result(""),
        },
        repeat=True,
    )


def test_images_load_saves_with_tag_imports_into_k8s_namespace_and_pins(host: Path) -> None:
    ref = "ghcr.io/desbordante/desbordante-backend:1.2.3"
    docker = FakeDocker()
    c = load_context(Result("", exited=1))
    assert k3s.load_into_k3s(c, ref, docker_client=docker) is True
    assert docker.image.named == [True]  # the tag is kept in the archive
    commands = run_commands(c)
    assert commands[0].endswith(
        f"crictl inspecti -o go-template --template '{{{{.status.id}}}} {{{{.status.pinned}}}}' "
        f"{ref}"
    )
    assert re.search(r"k3s ctr -n k8s\.io images import /\S+\.tar$", commands[1])
    # pinned: the kubelet's image GC must not delete the only copy of the tag
    assert commands[2].endswith(
        f"k3s ctr -n k8s.io images label {ref} io.cri-containerd.pinned=pinned"
    )
    assert len(commands) == 3


def test_images_load_skips_an_image_already_in_k3s_and_pinned(host: Path) -> None:
    docker = FakeDocker()
    c = load_context(Result(f"{FakeImage.id} true\n"))
    assert k3s.load_into_k3s(c, "img:1", docker_client=docker) is False
    assert docker.image.named == []
    assert len(calls(c)) == 1


def test_an_image_loaded_before_pinning_existed_is_pinned_without_a_new_import(
    host: Path,
) -> None:
    docker = FakeDocker()
    c = load_context(Result(f"{FakeImage.id} false\n"))
    assert k3s.load_into_k3s(c, "img:1", docker_client=docker) is True
    commands = run_commands(c)
    assert docker.image.named == []  # no docker save, no import
    assert commands[-1].endswith(
        "ctr -n k8s.io images label docker.io/library/img:1 io.cri-containerd.pinned=pinned"
    )


def test_another_image_under_the_tag_is_imported_again(host: Path) -> None:
    docker = FakeDocker()
    c = load_context(Result("sha256:" + "cd" * 32 + " true\n"))
    assert k3s.load_into_k3s(c, "img:1", docker_client=docker) is True
    assert docker.image.named == [True]


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("desbordante-backend:1", "docker.io/library/desbordante-backend:1"),
        ("desbordante/backend:1", "docker.io/desbordante/backend:1"),
        ("ghcr.io/desbordante/backend:1", "ghcr.io/desbordante/backend:1"),
        ("127.0.0.1:5000/backend:1", "127.0.0.1:5000/backend:1"),
        ("localhost/backend:1", "localhost/backend:1"),
    ],
)
def test_containerd_names_images_with_their_registry(ref: str, name: str) -> None:
    assert k3s.containerd_name(ref) == name


def test_registries_yaml_mirrors_registry() -> None:
    data = yaml.safe_load(k3s.registries_yaml("ghcr.io", "http://127.0.0.1:5000"))
    assert data == {"mirrors": {"ghcr.io": {"endpoint": ["http://127.0.0.1:5000"]}}}


def test_registry_task_writes_mirror_and_restarts_once(host: Path) -> None:
    c = MockContext(run={"systemctl restart k3s": Result("")})
    k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://127.0.0.1:5000")
    k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://127.0.0.1:5000")
    assert run_commands(c) == ["systemctl restart k3s"]
    assert stat.S_IMODE(k3s.REGISTRIES_PATH.stat().st_mode) == 0o600


def test_registry_dry_run_is_the_plan_the_real_run_executes(host: Path) -> None:
    c = MockContext(run={"systemctl restart k3s": Result("")}, repeat=True)
    path = k3s.REGISTRIES_PATH
    before = snapshot(host)

    def registry(dry_run: bool) -> None:
        k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://127.0.0.1:5000", dry_run=dry_run)
        if dry_run:
            assert snapshot(host) == before and run_commands(c) == []

    dry, real = dry_then_real(registry)
    assert dry.rows == real.rows and dry.ran == []
    assert (
        real.ran
        == real.runnable
        == dry.runnable
        == [
            ("write", f"{path} (mode 0600): k3s pulls ghcr.io images from http://127.0.0.1:5000"),
            ("run", "systemctl restart k3s"),
        ]
    )
    assert yaml.safe_load(path.read_text()) == {
        "mirrors": {"ghcr.io": {"endpoint": ["http://127.0.0.1:5000"]}}
    }
    assert run_commands(c) == ["systemctl restart k3s"]


def test_registry_without_root_stops_before_writing(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k3s, "is_root", lambda: False)
    c = MockContext(run={})
    with pytest.raises(Exit) as raised:
        k3s_tasks.registry(c, registry="ghcr.io", endpoint="http://127.0.0.1:5000")
    assert str(raised.value.message) == (
        "k3s.registry needs root: run `sudo -E invoke k3s.registry` with the same --registry "
        "and --endpoint."
    )
    assert not k3s.REGISTRIES_PATH.exists() and run_commands(c) == []
