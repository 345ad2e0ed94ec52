"""The dry runs of `k3s.install`, `k3s.uninstall` and `k3s.registry`: what they would
download, install, write and run on this machine, read from the machine (no root needed)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from desbordante_ops.cluster import k3s
from desbordante_ops.core.plan import Row, file_row, unreadable

UNINSTALL_REMOVES = (
    "the k3s service, binary and its kubectl/crictl/ctr links, /etc/rancher/k3s, "
    "/var/lib/rancher/k3s, /var/lib/kubelet: the cluster and every volume on it"
)


def _root(task: str) -> list[Row]:
    if k3s.is_root():
        return []
    return [("needs root", f"not root: the real run stops here; run `sudo -E invoke {task}`")]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _server_config() -> Row:
    try:
        wanted = k3s.merged_server_config(k3s.read_server_config(k3s.CONFIG_PATH))
    except OSError as exc:
        return unreadable(str(k3s.CONFIG_PATH), exc.strerror or str(exc))
    if wanted is None:
        return ("keep", f"{k3s.CONFIG_PATH} (already asks for secrets-encryption)")
    return file_row(k3s.CONFIG_PATH, "k3s server config (secrets-encryption, kubeconfig 0600)")


def _kubeconfig(target: Path) -> Row:
    if not target.exists():
        return file_row(target, f"copy of {k3s.K3S_KUBECONFIG} (the admin kubeconfig)")
    current = _read(k3s.K3S_KUBECONFIG)
    if current is not None and _read(target) == current:
        return ("keep", f"{target} (already the admin kubeconfig)")
    alternative = target.with_name("k3s.yaml")
    return file_row(alternative, f"the admin kubeconfig ({target} exists and is kept)")


def install(c: Any, lock: k3s.Lock, kubeconfig: Path | None = None) -> list[Row]:
    """What `k3s.install` would do on this machine."""
    current = k3s.installed_version(c)
    if current == lock.version and k3s.service_active(c):
        return [("keep", f"k3s {lock.version} is installed and running: nothing to do")]
    env = " ".join(f"{key}={value}" for key, value in k3s.install_env(lock).items())
    return [
        *_root("k3s.install"),
        ("download", f"{lock.binary_url} (sha256 {lock.binary_sha256} checked first)"),
        (
            "download",
            f"install.sh from {' or '.join(lock.script_urls)} (sha256 {lock.script_sha256})",
        ),
        (
            "install",
            f"{k3s.BIN_PATH} (mode 0755)" + (f", replacing k3s {current}" if current else ""),
        ),
        _server_config(),
        ("run", f"{env} sh install.sh (installs and starts the k3s service)"),
        _kubeconfig(kubeconfig or k3s.default_kubeconfig_target()),
    ]


def uninstall(c: Any, yes: bool) -> list[Row]:
    """What `k3s.uninstall [--yes]` would do on this machine."""
    if not k3s.UNINSTALL_SCRIPT.exists():
        return [("keep", "k3s is not installed: nothing to do")]
    version = k3s.installed_version(c) or "(version unknown)"
    ask = [] if yes else [("ask", "type 'uninstall' to confirm (--yes skips it)")]
    return [
        *_root("k3s.uninstall"),
        *ask,
        ("run", f"{shlex.quote(str(k3s.UNINSTALL_SCRIPT))}: removes k3s {version}"),
        ("delete", UNINSTALL_REMOVES),
    ]


def registry(registry: str, endpoint: str) -> list[Row]:
    """What `k3s.registry` would do on this machine."""
    path = k3s.REGISTRIES_PATH
    content = k3s.registries_yaml(registry, endpoint)
    try:
        current = path.read_text() if path.is_file() else None
    except OSError as exc:
        current, rows = None, [unreadable(str(path), exc.strerror or str(exc))]
    else:
        rows = []
    if current == content:
        return [("keep", f"{path} already mirrors {registry} to {endpoint}: nothing to do")]
    return [
        *_root("k3s.registry"),
        *rows,
        file_row(path, f"k3s pulls {registry} images from {endpoint}"),
        ("run", "systemctl restart k3s"),
    ]
