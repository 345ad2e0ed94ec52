"""backend/requirements.lock pins everything, and agrees with backend/pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from desbordante_ops.core.settings import REPO_ROOT
from desbordante_ops.image.wheelhouse import BUILD_REQUIREMENTS, lock_path, requirements

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)$")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _locked() -> dict[str, str]:
    pins = {}
    for line in requirements(lock_path())[: -len(BUILD_REQUIREMENTS)]:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        pins[_name(match[1])] = match[3]
    return pins


def test_every_lock_line_is_an_exact_pin() -> None:
    assert len(_locked()) > 30


def test_direct_pins_of_pyproject_match_the_lock() -> None:
    project = tomllib.loads((REPO_ROOT / "backend" / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for requirement in project["dependencies"]:
        match = PIN.match(requirement)
        assert match, f"backend/pyproject.toml: not an exact pin: {requirement!r}"
        name, version = _name(match[1]), match[3]
        assert locked.get(name) == version, f"{name}: pyproject {version}, lock {locked.get(name)}"
