"""The wheelhouse: every wheel the backend image installs, for offline (`--no-index`) builds.

Wheels are downloaded on the host for the image's interpreter and platform (CPython 3.11,
glibc x86_64 manylinux), so the image build never needs the package index. The directory is
git-ignored and kept between runs: it is rebuilt only when backend/pyproject.toml (or the
platform below) changes, which a key file inside it records.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

from invoke import Exit

from desbordante_ops.config import REPO_ROOT
from desbordante_ops.console import ok, step

PYTHON_VERSION = "3.11"
ABI = "cp311"
# glibc of Debian bookworm (python:3.11-slim and the debootstrap base) is 2.36.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
# The app itself is built inside the image from source: its build backend must be there too.
BUILD_REQUIREMENTS = ("setuptools>=69",)
KEY_FILE = ".key"


def directory(root: Path = REPO_ROOT) -> Path:
    """Where the wheelhouse lives (inside the build context, which is the repository root)."""
    return root / "wheelhouse"


def requirements(pyproject: Path) -> list[str]:
    """The backend's pinned runtime dependencies plus its build requirements."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise Exit(f"Cannot read [project] of {pyproject}: {error}") from None
    return [*project.get("dependencies", []), *BUILD_REQUIREMENTS]


def cache_key(pyproject: Path) -> str:
    """A digest of what decides the wheelhouse's content."""
    digest = hashlib.sha256(pyproject.read_bytes())
    digest.update("\n".join([PYTHON_VERSION, ABI, *PLATFORMS, *BUILD_REQUIREMENTS]).encode())
    return digest.hexdigest()


def is_current(root: Path = REPO_ROOT) -> bool:
    """True when the wheelhouse exists and matches backend/pyproject.toml."""
    key = directory(root) / KEY_FILE
    pyproject = root / "backend" / "pyproject.toml"
    return key.is_file() and key.read_text().strip() == cache_key(pyproject)


def download_command(reqs: list[str], target: Path) -> list[str]:
    """`pip download` of REQS as binary wheels for the image's Python and platform."""
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--dest", str(target)]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", ABI]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return [*command, *reqs]


def build(root: Path = REPO_ROOT, force: bool = False) -> Path:
    """Fill the wheelhouse unless it is current; return its directory."""
    target = directory(root)
    pyproject = root / "backend" / "pyproject.toml"
    if not force and is_current(root):
        wheels = len(list(target.glob("*.whl")))
        ok(f"Wheelhouse {target.relative_to(root)}/ is current ({wheels} wheels)")
        return target
    target.mkdir(exist_ok=True)
    for stale in [*target.glob("*.whl"), target / KEY_FILE]:
        stale.unlink(missing_ok=True)
    reqs = requirements(pyproject)
    step(f"Downloading wheels of {len(reqs)} requirements for cp311 manylinux x86_64")
    result = subprocess.run(
        download_command(reqs, target), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise Exit(f"pip download failed: {(errors or ['see pip output'])[0]}")
    (target / KEY_FILE).write_text(cache_key(pyproject) + "\n")
    wheels = list(target.glob("*.whl"))
    size = sum(wheel.stat().st_size for wheel in wheels) / 1e6
    ok(f"Wheelhouse {target.relative_to(root)}/: {len(wheels)} wheels, {size:.0f} MB")
    return target
