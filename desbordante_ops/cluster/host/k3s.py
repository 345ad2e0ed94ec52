"""A pinned, checksum-verified single-node k3s server, and images copied into it.

The release and the official install script are pinned in `k3s.lock` (version + sha256). Both
files are downloaded, verified, and only then is anything run: the binary is installed by us,
and the pinned script runs with INSTALL_K3S_SKIP_DOWNLOAD=true so it downloads nothing itself.
Also here: `load_into_k3s` (docker save with the tag kept -> `k3s ctr images import`, then the
image is pinned against the kubelet's image garbage collection).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from docker.errors import DockerException
from invoke import Context, Exit

from desbordante_ops.cluster.kube.client import kubeconfig_path
from desbordante_ops.core.console import ok, step, warn
from desbordante_ops.core.files import write_private
from desbordante_ops.core.plan import Plan, Step, execute, file_step, note, refused, unknown
from desbordante_ops.core.settings import REPO_ROOT, SOURCE_DEFAULT, EnvConfig
from desbordante_ops.core.shell import attempt, command_step, run
from desbordante_ops.image import engine
from desbordante_ops.image.refs import repository_path

LOCK_PATH = REPO_ROOT / "k3s.lock"
BIN_PATH = Path("/usr/local/bin/k3s")
CONFIG_PATH = Path("/etc/rancher/k3s/config.yaml")
REGISTRIES_PATH = Path("/etc/rancher/k3s/registries.yaml")
K3S_KUBECONFIG = Path("/etc/rancher/k3s/k3s.yaml")
UNINSTALL_SCRIPT = Path("/usr/local/bin/k3s-uninstall.sh")
# containerd's CRI plugin reports images with this label as pinned; kubelet GC skips them.
PINNED_LABEL = "io.cri-containerd.pinned=pinned"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DOWNLOAD_TIMEOUT_SECONDS = 300
# Written on first install. secrets-encryption only takes effect on the first start of a server;
# Traefik (the bundled ingress) stays enabled: the manifests' Ingresses and basicAuth use it.
SERVER_CONFIG: dict[str, Any] = {
    "secrets-encryption": True,
    "write-kubeconfig-mode": "0600",
}

Downloader = Callable[[str, Path], None]


@dataclass(frozen=True)
class Lock:
    """The pins of k3s.lock for this machine's architecture."""

    version: str
    binary_url: str
    binary_sha256: str
    script_urls: tuple[str, ...]
    script_sha256: str


def machine_arch(machine: str | None = None) -> str:
    """k3s's name for this CPU architecture."""
    machine = (machine or platform.machine()).lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise Exit(f"k3s.lock pins amd64 and arm64 only; this machine is {machine}.")
    return arch


def load_lock(path: Path = LOCK_PATH, arch: str | None = None) -> Lock:
    """Read and check the lock; Exit if a checksum is missing or a placeholder."""
    if not path.is_file():
        raise Exit(f"{path} is missing; it pins the k3s version and checksums.")
    data = tomllib.loads(path.read_text())
    arch = arch or machine_arch()
    try:
        k3s = data["k3s"]
        binary = k3s["binaries"][arch]
        script = data["install_script"]
        lock = Lock(
            version=k3s["version"],
            binary_url=f"{k3s['release_url'].rstrip('/')}/{binary['asset']}",
            binary_sha256=binary["sha256"].lower(),
            script_urls=tuple(script["urls"]),
            script_sha256=script["sha256"].lower(),
        )
    except KeyError as exc:
        raise Exit(f"{path}: missing entry {exc} (for architecture {arch}).") from None
    for what, value in (("k3s binary", lock.binary_sha256), ("install.sh", lock.script_sha256)):
        if not SHA256_RE.match(value):
            raise Exit(
                f"{path}: the sha256 of the {what} is not filled in ({value!r}); put the "
                f"published checksum there before installing. Nothing was run."
            )
    return lock


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def http_download(url: str, dest: Path) -> None:
    """Download URL to DEST (following redirects); Exit with a clear line on failure."""
    try:
        with (
            httpx.stream(
                "GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_SECONDS
            ) as response,
            dest.open("wb") as fh,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes():
                fh.write(chunk)
    except httpx.HTTPError as exc:
        raise Exit(f"Download of {url} failed: {exc}. Nothing was installed.") from None


def fetch_verified(urls: tuple[str, ...], sha256: str, dest: Path, download: Downloader) -> str:
    """Download the first of URLS whose content has SHA256 to DEST; returns the URL used.

    A file with another checksum is deleted and never executed; if no URL matches: Exit.
    """
    problems: list[str] = []
    for url in urls:
        try:
            download(url, dest)
        except Exit as exc:
            problems.append(str(exc.message))
            continue
        actual = sha256_file(dest)
        if actual == sha256:
            return url
        dest.unlink(missing_ok=True)
        problems.append(f"{url}: sha256 {actual} != pinned {sha256}")
    raise Exit("Checksum verification failed, nothing was run: " + "; ".join(problems))


def installed_version(c: Context) -> str | None:
    """Version of the installed k3s binary (`v1.36.4+k3s1`), or None."""
    result = attempt(c, f"{BIN_PATH} --version")
    if result is None or not result.ok:
        return None
    match = re.search(r"k3s version (\S+)", result.stdout)
    return match.group(1) if match else None


def service_active(c: Context) -> bool:
    result = attempt(c, "systemctl is-active --quiet k3s")
    return result is not None and result.ok


def read_server_config(path: Path) -> dict[str, Any] | None:
    """The k3s server config at PATH, None when there is none."""
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def merged_server_config(current: dict[str, Any] | None) -> dict[str, Any] | None:
    """CURRENT with SERVER_CONFIG merged in; None when CURRENT already says the same."""
    if current is not None and all(current.get(k) == v for k, v in SERVER_CONFIG.items()):
        return None
    return {**(current or {}), **SERVER_CONFIG}


def write_server_config(path: Path | None = None) -> bool:
    """Write the k3s server config unless it already says the same; True when written."""
    path = path or CONFIG_PATH
    current = read_server_config(path)
    wanted = merged_server_config(current)
    if wanted is None:
        return False
    if (
        current is not None
        and K3S_KUBECONFIG.exists()
        and current.get("secrets-encryption") is not True
    ):
        warn(
            "k3s already ran without secrets-encryption; it only applies at first start. "
            "Use `k3s secrets-encrypt enable` + `rotate-keys` per the k3s docs."
        )
    write_private(path, yaml.safe_dump(wanted, sort_keys=True))
    return True


def install_env(lock: Lock) -> dict[str, str]:
    return {
        "INSTALL_K3S_SKIP_DOWNLOAD": "true",
        "INSTALL_K3S_VERSION": lock.version,
        "INSTALL_K3S_EXEC": "server",
    }


def copy_kubeconfig(target: Path, source: Path | None = None) -> Path:
    """Copy k3s's admin kubeconfig for the invoking user, mode 0600; returns where it went.

    An existing different file at TARGET is not overwritten: the copy goes next to it as
    `k3s.yaml` and a hint says so.
    """
    content = (source or K3S_KUBECONFIG).read_bytes()
    if target.exists() and target.read_bytes() != content:
        alternative = target.with_name("k3s.yaml")
        warn(f"{target} exists and differs; writing {alternative} instead (set KUBECONFIG_PATH).")
        target = alternative
    write_private(target, content)
    owner = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if owner[0] and owner[1]:
        os.chown(target.parent, int(owner[0]), int(owner[1]))
        os.chown(target, int(owner[0]), int(owner[1]))
    return target


def server_kubeconfig(cfg: EnvConfig) -> Path:
    """The kubeconfig root uses on the k3s server: KUBECONFIG_PATH when it is set, else k3s's
    own admin kubeconfig (never another cluster's ~/.kube/config that happens to be there)."""
    if cfg.source("KUBECONFIG_PATH") == SOURCE_DEFAULT and K3S_KUBECONFIG.is_file():
        return K3S_KUBECONFIG
    return kubeconfig_path(cfg)


def default_kubeconfig_target() -> Path:
    """~/.kube/config of the user who ran sudo (or of the current user)."""
    sudo_user = os.environ.get("SUDO_USER")
    home = Path(os.path.expanduser(f"~{sudo_user}")) if sudo_user else Path.home()
    return home / ".kube" / "config"


def is_root() -> bool:
    return os.geteuid() == 0


def _with_root(command: str) -> str:
    return command if is_root() else f"sudo {command}"


def containerd_name(image_ref: str) -> str:
    """IMAGE_REF as containerd names it (`app:1` -> `docker.io/library/app:1`)."""
    path = repository_path(image_ref)
    if path != image_ref:
        return image_ref
    return f"docker.io/{image_ref}" if "/" in image_ref else f"docker.io/library/{image_ref}"


def _inspect(c: Context, image_ref: str, template: str) -> str | None:
    """`crictl inspecti` of IMAGE_REF formatted by the Go TEMPLATE; None when it is not there."""
    result = attempt(
        c,
        _with_root(f"{BIN_PATH} crictl inspecti -o go-template --template '{template}' ")
        + shlex.quote(image_ref),
    )
    if result is None or not result.ok:
        return None
    return result.stdout.strip() or None


def image_in_k3s(c: Context, image_ref: str) -> str | None:
    """The image ID (config digest) of IMAGE_REF in k3s's containerd, or None."""
    return _inspect(c, image_ref, "{{.status.id}}")


def k3s_image(c: Context, image_ref: str) -> tuple[str, bool] | None:
    """(image ID, pinned) of IMAGE_REF in k3s's containerd, or None when it is not there."""
    found = _inspect(c, image_ref, "{{.status.id}} {{.status.pinned}}")
    if found is None:
        return None
    image_id, _, pinned = found.partition(" ")
    return image_id, pinned.strip() == "true"


def pin_in_k3s(c: Context, image_ref: str) -> None:
    """Label IMAGE_REF pinned, so the kubelet's image garbage collection never removes it."""
    label = f"{BIN_PATH} ctr -n k8s.io images label {shlex.quote(containerd_name(image_ref))}"
    run(c, _with_root(f"{label} {PINNED_LABEL}"), f"Pinning {image_ref} in k3s")


def load_into_k3s(c: Context, image_ref: str, docker_client: Any = None) -> bool:
    """Copy IMAGE_REF from the local Docker engine into k3s (no registry); True when changed.

    `docker save` keeps the tag (named=True), so the pods' `image:` reference resolves. The
    image is pinned (containerd label io.cri-containerd.pinned=pinned): nothing but this image
    holds the tag, so the kubelet's image GC must not delete it. An image whose ID is already in
    k3s and pinned is skipped (a second run changes nothing).
    """
    docker_client = docker_client or engine.connect()
    try:
        image = docker_client.images.get(image_ref)
    except DockerException:
        raise Exit(
            f"Image {image_ref} is not in the local Docker engine; build it first."
        ) from None
    found = k3s_image(c, image_ref)
    if found is not None and found[0] == image.id:
        if found[1]:
            ok(f"{image_ref} already in k3s (pinned): nothing to do")
            return False
        pin_in_k3s(c, image_ref)
        ok(f"{image_ref} already in k3s; pinned against image garbage collection")
        return True
    with tempfile.NamedTemporaryFile(prefix="image-", suffix=".tar") as tar:
        for chunk in image.save(named=True):
            tar.write(chunk)
        tar.flush()
        step(f"Importing {image_ref} into k3s (containerd namespace k8s.io)")
        import_command = f"{BIN_PATH} ctr -n k8s.io images import {shlex.quote(tar.name)}"
        run(c, _with_root(import_command), f"Importing {image_ref} into k3s", hide=False)
    pin_in_k3s(c, image_ref)
    ok(f"{image_ref} loaded into k3s (pinned against image garbage collection)")
    return True


def registries_yaml(registry: str, endpoint: str) -> str:
    """`/etc/rancher/k3s/registries.yaml` content mirroring REGISTRY to ENDPOINT."""
    return yaml.safe_dump({"mirrors": {registry: {"endpoint": [endpoint]}}}, sort_keys=True)


UNINSTALL_REMOVES = (
    "the k3s service, binary and its kubectl/crictl/ctr links, /etc/rancher/k3s, "
    "/var/lib/rancher/k3s, /var/lib/kubelet: the cluster and every volume on it"
)


def _needs_root(task: str, what: str) -> list[Step]:
    if is_root():
        return []
    return [
        refused(
            "needs root",
            f"not root: the real run stops here; run `sudo -E invoke {task}`",
            f"{task} needs root: run `sudo -E invoke {task}`{what}.",
        )
    ]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _server_config_step() -> Step:
    try:
        wanted = merged_server_config(read_server_config(CONFIG_PATH))
    except OSError as exc:
        return unknown(str(CONFIG_PATH), exc.strerror or str(exc))
    if wanted is None:
        return note("keep", f"{CONFIG_PATH} (already asks for secrets-encryption)")
    what = "k3s server config (secrets-encryption, kubeconfig 0600)"
    return file_step(CONFIG_PATH, what, write_server_config)


def _kubeconfig_step(target: Path) -> Step:
    current = _read(K3S_KUBECONFIG)
    if target.exists() and current is not None and _read(target) == current:
        return note("keep", f"{target} (already the admin kubeconfig)")
    if target.exists():
        alternative = target.with_name("k3s.yaml")
        return file_step(
            alternative,
            f"the admin kubeconfig ({target} exists and is kept; set KUBECONFIG_PATH)",
            lambda: copy_kubeconfig(target),
        )
    return file_step(
        target, f"copy of {K3S_KUBECONFIG} (the admin kubeconfig)", lambda: copy_kubeconfig(target)
    )


def install_plan(
    c: Context,
    lock: Lock,
    kubeconfig: Path | None = None,
    download: Downloader = http_download,
    workdir: Path | None = None,
) -> Plan:
    """What `k3s.install` does on this machine (idempotent): download and verify the pinned
    binary and install.sh, install the binary, the server config, run the script, copy the
    admin kubeconfig. WORKDIR: where the downloads go (made and removed by the caller)."""
    title = f"k3s.install {lock.version}"
    current = installed_version(c)
    if current == lock.version and service_active(c):
        return Plan(
            title, [note("keep", f"k3s {lock.version} is installed and running: nothing to do")]
        )
    scratch = workdir or Path(tempfile.gettempdir())
    binary, script = scratch / "k3s", scratch / "install.sh"
    env = install_env(lock)
    script_env = " ".join(f"{key}={value}" for key, value in env.items())

    def install_binary() -> None:
        BIN_PATH.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, BIN_PATH)
        BIN_PATH.chmod(0o755)

    run_script = command_step(
        c, f"sh {shlex.quote(str(script))}", "The pinned install.sh", hide=False, env=env
    )
    return Plan(
        title,
        [
            *_needs_root("k3s.install", " (nothing was done)"),
            Step(
                "download",
                f"{lock.binary_url} (sha256 {lock.binary_sha256} checked first)",
                lambda: fetch_verified((lock.binary_url,), lock.binary_sha256, binary, download),
            ),
            Step(
                "download",
                f"install.sh from {' or '.join(lock.script_urls)} (sha256 {lock.script_sha256})",
                lambda: fetch_verified(lock.script_urls, lock.script_sha256, script, download),
            ),
            Step(
                "install",
                f"{BIN_PATH} (mode 0755)" + (f", replacing k3s {current}" if current else ""),
                install_binary,
            ),
            _server_config_step(),
            Step(
                "run",
                f"{script_env} sh install.sh (installs and starts the k3s service)",
                run_script.run,
            ),
            _kubeconfig_step(kubeconfig or default_kubeconfig_target()),
        ],
    )


def uninstall_plan(c: Context, yes: bool, confirm: Callable[[str], str] = input) -> Plan:
    """What `k3s.uninstall [--yes]` does on this machine (asks first unless YES)."""
    if not UNINSTALL_SCRIPT.exists():
        return Plan("k3s.uninstall", [note("keep", "k3s is not installed: nothing to do")])
    version = installed_version(c) or "(version unknown)"

    def ask() -> None:
        answer = confirm("This deletes the cluster and every volume on it. Type 'uninstall': ")
        if answer.strip() != "uninstall":
            raise Exit("Not confirmed; nothing was removed.")

    command = shlex.quote(str(UNINSTALL_SCRIPT))
    remove = command_step(c, command, "k3s-uninstall.sh", hide=False)
    return Plan(
        "k3s.uninstall",
        [
            *_needs_root("k3s.uninstall", ""),
            *([] if yes else [Step("ask", "type 'uninstall' to confirm (--yes skips it)", ask)]),
            Step("run", f"{command}: removes k3s {version}", remove.run),
            note("delete", UNINSTALL_REMOVES),
        ],
    )


def registry_plan(c: Context, registry: str, endpoint: str) -> Plan:
    """What `k3s.registry` does: registries.yaml mirroring REGISTRY to ENDPOINT, a restart."""
    path = REGISTRIES_PATH
    content = registries_yaml(registry, endpoint)
    try:
        current = path.read_text() if path.is_file() else None
    except OSError as exc:
        return Plan("k3s.registry", [unknown(str(path), exc.strerror or str(exc))])
    if current == content:
        return Plan(
            "k3s.registry",
            [note("keep", f"{path} already mirrors {registry} to {endpoint}: nothing to do")],
        )
    return Plan(
        "k3s.registry",
        [
            *_needs_root("k3s.registry", " with the same --registry and --endpoint"),
            file_step(
                path,
                f"k3s pulls {registry} images from {endpoint}",
                lambda: write_private(path, content),
            ),
            command_step(c, "systemctl restart k3s", "Restarting k3s"),
        ],
    )


def run_install(
    c: Context,
    lock: Lock,
    kubeconfig: Path | None,
    dry_run: bool,
    download: Downloader = http_download,
) -> list[Step]:
    """`invoke k3s.install`: the downloads go to a directory removed afterwards; the steps
    that ran (none: nothing to do)."""
    with tempfile.TemporaryDirectory(prefix="k3s-install-") as tmp:
        return execute(install_plan(c, lock, kubeconfig, download, workdir=Path(tmp)), dry_run)
