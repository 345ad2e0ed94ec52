"""Every check of desbordante-ops. `nox` runs the default sessions (all of CI); `nox -l` lists them.

Arguments after `--` reach pytest (or the e2e target options), e.g. `nox -s backend -- -k upload`.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "unit",
    "backend",
    "manifests",
    "quickstart",
    "e2e",
    "contract",
    "images",
    "drills",
]

PYTHON = "3.11"
TOOLKIT = ("-e", ".[test]")
# The backend with every transitive pin of its lock (the same set the image installs).
BACKEND = ("-e", "./backend", "--constraint", "backend/requirements.lock")


def _pytest(session: nox.Session, *args: str) -> None:
    session.run("pytest", *args, *session.posargs)


@nox.session(python=PYTHON, tags=["quick"])
def lint(session: nox.Session) -> None:
    """Ruff lint and format check of the whole repository."""
    session.install("ruff==0.17.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON, tags=["quick"])
def unit(session: nox.Session) -> None:
    """Fast unit tests: toolkit logic, config precedence, secrets, generated commands."""
    session.install(*TOOLKIT)
    _pytest(session, "tests/unit")


@nox.session(python=PYTHON, tags=["services"])
def backend(session: nox.Session) -> None:
    """Backend tests on the real PostgreSQL and RabbitMQ, with real worker processes."""
    session.install(*BACKEND, *TOOLKIT)
    _pytest(session, "tests/backend")


@nox.session(python=PYTHON, tags=["quick"])
def manifests(session: nox.Session) -> None:
    """Render the Kustomize overlays, validate them offline and check the policies."""
    session.install(*TOOLKIT)
    _pytest(session, "tests/manifests")


@nox.session(python=PYTHON, tags=["services"])
def quickstart(session: nox.Session) -> None:
    """Run the README's Quickstart command exactly as written, on a fresh clone."""
    session.install(*TOOLKIT)
    _pytest(session, "tests/quickstart")


@nox.session(python=PYTHON, tags=["services"])
def e2e(session: nox.Session) -> None:
    """End-to-end suite over HTTP against the local stack (or `-- --env stage`, `--base-url`)."""
    session.install(*BACKEND, *TOOLKIT)
    _pytest(session, "tests/e2e")


@nox.session(python=PYTHON, tags=["services"])
def contract(session: nox.Session) -> None:
    """Schemathesis, all checks, bounded, from /openapi.json against an isolated local stack."""
    session.install(*BACKEND, "-e", ".[test,contract]")
    _pytest(session, "tests/contract")


@nox.session(python=PYTHON, tags=["docker"])
def images(session: nox.Session) -> None:
    """Build, inspect, push and pull the image on a real engine and registry; e2e on it."""
    session.install(*BACKEND, *TOOLKIT)
    _pytest(session, "tests/images")


@nox.session(python=PYTHON, tags=["services"])
def drills(session: nox.Session) -> None:
    """Fault drills on real processes: kill -9, broker/database restarts, disk full, bad input."""
    session.install(*BACKEND, *TOOLKIT)
    _pytest(session, "tests/drills")


@nox.session(python=PYTHON, default=False)
def tests(session: nox.Session) -> None:
    """Every suite that needs no Docker engine (all default sessions but lint and images)."""
    for name in ("unit", "backend", "manifests", "quickstart", "e2e", "contract", "drills"):
        session.notify(name, posargs=session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against the local stack; tables on screen, JSON under results/."""
    session.install(*BACKEND, *TOOLKIT)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON, default=False)
def infra(session: nox.Session) -> None:
    """pytest-testinfra checks of a bootstrapped k3s host (`-- --hosts=ssh://root@server`)."""
    session.install(*TOOLKIT)
    _pytest(session, "tests/infra")
