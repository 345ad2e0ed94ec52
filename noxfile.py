"""Every check of desbordante-ops. `nox` runs the default sessions (all of CI); `nox -l` lists them.

Arguments after `--` reach pytest (or the e2e target options), e.g. `nox -s backend -- -k upload`.
Pins live in pyproject.toml (dependency groups) and backend/requirements.lock, nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "unit",
    "manifests",
    "integration",
    "backend",
    "quickstart",
    "e2e",
    "contract",
    "images",
    "drills",
]

PYTHON = "3.11"
PYPROJECT = nox.project.load_toml(Path(__file__).with_name("pyproject.toml"))
# The toolkit with the backend it reads its settings from, every backend pin from the lock.
STACK = ("-e", "./backend", "--constraint", "backend/requirements.lock", "-e", ".")


def _install(session: nox.Session, *groups: str) -> None:
    """The toolkit and backend, plus the dependency groups GROUPS of pyproject.toml."""
    extra = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install(*STACK, *extra)


def _pytest(session: nox.Session, path: str, *groups: str) -> None:
    """pytest of PATH with the test group (and GROUPS); arguments after `--` reach pytest."""
    _install(session, "test", *groups)
    session.run("pytest", path, *session.posargs)


@nox.session(python=PYTHON, tags=["quick"])
def lint(session: nox.Session) -> None:
    """Ruff lint and format check of the whole repository."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON, tags=["quick"])
def typecheck(session: nox.Session) -> None:
    """mypy over the toolkit, the backend, the tests and the benchmarks."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON, tags=["quick"])
def unit(session: nox.Session) -> None:
    """Fast unit tests without services: toolkit logic, settings, generated commands, layers."""
    _pytest(session, "tests/unit")


@nox.session(python=PYTHON, tags=["quick"])
def manifests(session: nox.Session) -> None:
    """Render the Kustomize overlays, validate them offline and check the policies."""
    _pytest(session, "tests/manifests")


@nox.session(python=PYTHON, tags=["services"])
def integration(session: nox.Session) -> None:
    """The toolkit against this machine's PostgreSQL and RabbitMQ (provisioning, doctor, stores)."""
    _pytest(session, "tests/integration")


@nox.session(python=PYTHON, tags=["services"])
def backend(session: nox.Session) -> None:
    """Backend tests on the real PostgreSQL and RabbitMQ, with real worker processes."""
    _pytest(session, "tests/backend")


@nox.session(python=PYTHON, tags=["services"])
def quickstart(session: nox.Session) -> None:
    """Run the README's Quickstart command exactly as written, on a fresh clone."""
    _pytest(session, "tests/quickstart")


@nox.session(python=PYTHON, tags=["services"])
def e2e(session: nox.Session) -> None:
    """End-to-end suite over HTTP against the local stack (or `-- --env stage`, `--base-url`)."""
    _pytest(session, "tests/e2e")


@nox.session(python=PYTHON, tags=["services"])
def contract(session: nox.Session) -> None:
    """Schemathesis, all checks, bounded, from /openapi.json against an isolated local stack."""
    _pytest(session, "tests/contract", "contract")


@nox.session(python=PYTHON, tags=["docker"])
def images(session: nox.Session) -> None:
    """Build, inspect, push and pull the image on a real engine and registry; e2e on it."""
    _pytest(session, "tests/images")


@nox.session(python=PYTHON, tags=["services"])
def drills(session: nox.Session) -> None:
    """Fault drills on real processes: kill -9, broker/database restarts, disk full, bad input."""
    _pytest(session, "tests/drills")


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against the local stack; tables on screen, JSON under results/."""
    _install(session)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON, default=False)
def infra(session: nox.Session) -> None:
    """pytest-testinfra checks of a bootstrapped k3s host (`-- --hosts=ssh://root@server`)."""
    _pytest(session, "tests/infra")
