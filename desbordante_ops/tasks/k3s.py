"""`k3s.*`: install, uninstall and configure the pinned single-node k3s server."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit, task

from desbordante_ops.cluster.host.k3s import (
    load_lock,
    registry_plan,
    run_install,
    uninstall_plan,
)
from desbordante_ops.core.console import print_table
from desbordante_ops.core.plan import execute
from desbordante_ops.tasks import options


@task(
    help={
        "version": "Expected k3s version; must equal the one pinned in k3s.lock",
        "dry_run": options.DRY_RUN,
        "kubeconfig": "Where to copy the admin kubeconfig (default: ~/.kube/config of the user)",
    },
)
def install(
    c: Context, version: str | None = None, dry_run: bool = False, kubeconfig: str | None = None
) -> None:
    """Install the k3s release pinned in k3s.lock (checksums verified; needs root)."""
    pinned = load_lock()
    if version and version != pinned.version:
        raise Exit(
            f"--version {version} is not pinned: k3s.lock pins {pinned.version}. Update the "
            "version and its checksums in k3s.lock first."
        )
    run_install(c, pinned, Path(kubeconfig) if kubeconfig else None, dry_run)


@task(
    help={
        "yes": "Do not ask: remove k3s and ALL cluster data on this machine",
        "dry_run": options.DRY_RUN,
    }
)
def uninstall(c: Context, yes: bool = False, dry_run: bool = False) -> None:
    """Remove k3s and all of its data from this machine (asks first; needs root)."""
    execute(uninstall_plan(c, yes), dry_run)


@task
def lock(c: Context) -> None:
    """Show the k3s version and checksums pinned in k3s.lock."""
    pinned = load_lock()
    print_table(
        "k3s.lock",
        ("Item", "Value"),
        [
            ("version", pinned.version),
            ("binary", pinned.binary_url),
            ("binary sha256", pinned.binary_sha256),
            ("install.sh", " | ".join(pinned.script_urls)),
            ("install.sh sha256", pinned.script_sha256),
        ],
    )


@task(
    help={
        "registry": "Registry host the manifests name, e.g. ghcr.io or 127.0.0.1:5000",
        "endpoint": "URL k3s pulls from instead, e.g. http://127.0.0.1:5000",
        "dry_run": options.DRY_RUN,
    },
)
def registry(c: Context, registry: str = "", endpoint: str = "", dry_run: bool = False) -> None:
    """Make k3s pull a registry's images from another endpoint (registries.yaml; restarts k3s)."""
    if not registry or not endpoint:
        raise Exit("k3s.registry needs --registry HOST and --endpoint URL.")
    execute(registry_plan(c, registry, endpoint), dry_run)
