"""A local Python 3.11 base image made with `debootstrap` (Debian bookworm) and imported.

No image can be pulled on a machine without a registry mirror, so the tests build the backend
image on `desbordante-local/python:3.11-bookworm`: a minimal bookworm root file system with
python3 (3.11) and python3-venv (ensurepip's wheels), imported with docker-py. It is built once
and kept in the engine's image store; a later call finds it and does nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from support.dockerd import Unavailable, ensure_packages

LOCAL_BASE_IMAGE = "desbordante-local/python:3.11-bookworm"
SUITE = "bookworm"  # Debian 12: its python3 is 3.11
INCLUDE = ("python3", "python3-venv", "ca-certificates")
# Removed from the root file system before import: caches, package lists, docs.
PRUNE = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log",
)
CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def host_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str | None:
    """The Debian mirror the host's apt uses (deb822 or one-line format), if any."""
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s+\S+", text, re.MULTILINE
        )
        if match:
            return match.group(1)
    return None


def exists(client: docker.DockerClient, tag: str = LOCAL_BASE_IMAGE) -> bool:
    """True when TAG is in the engine's image store."""
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _run(command: list[str], what: str, log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise Unavailable(f"{what} failed (exit {result.returncode}): {lines[-1] if lines else ''}")


def debootstrap(root: Path, log: Path, mirror: str | None = None) -> None:
    """A minimal bookworm root file system with Python 3.11 in ROOT."""
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE]
    command.append(str(root))
    mirror = mirror or host_mirror()
    if mirror:
        command.append(mirror)
    _run(command, "debootstrap", log)
    for relative in PRUNE:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir(parents=True)
    for leftover in ("etc/hostname", "etc/resolv.conf"):
        (root / leftover).unlink(missing_ok=True)


def build(client: docker.DockerClient, tag: str = LOCAL_BASE_IMAGE, force: bool = False) -> str:
    """Build and import the base image unless TAG exists; return its image id.

    The id is read as `attrs["Id"]`: an image the engine returned always has one, while the
    `.id` property is typed as optional.
    """
    if exists(client, tag) and not force:
        return client.images.get(tag).attrs["Id"]
    ensure_packages(["debootstrap"])
    repository, _, version = tag.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="desbordante-base-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        root, archive, log = workdir / "root", workdir / "rootfs.tar", workdir / "debootstrap.log"
        debootstrap(root, log)
        _run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(archive), "."],
            "tar of the root file system",
            log,
        )
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version, changes=list(CHANGES)
        )
    image = client.images.get(tag)
    client.containers.run(  # the base can run Python and has ensurepip's wheels
        tag, ["python3", "-c", "import ensurepip"], remove=True, network_mode="none"
    )
    return image.attrs["Id"]
