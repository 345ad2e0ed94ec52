"""pytest-testinfra checks of a bootstrapped k3s host: `nox -s infra -- --hosts=ssh://root@server`.

Without --hosts every test is skipped (testinfra would otherwise check *this* machine, which is
not a k3s server). Options (all optional): --infra-env stage|prod, --infra-kubeconfig PATH
(the user's copy made by k3s.install, default /root/.kube/config).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from desbordante_ops.core.settings import load_config

SKIP_REASON = "needs a bootstrapped k3s host: nox -s infra -- --hosts=ssh://root@server"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("infra", "desbordante k3s host checks")
    group.addoption("--infra-env", default="stage", help="environment to check: stage or prod")
    group.addoption(
        "--infra-kubeconfig",
        default="/root/.kube/config",
        help="the kubeconfig copy k3s.install made for the user (checked for mode 0600)",
    )


def _hosts_given(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("hosts"))
    except ValueError:  # testinfra plugin not installed
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _hosts_given(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(config.rootpath / "tests" / "infra"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def infra_env(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--infra-env", default="stage"))


@pytest.fixture(scope="session")
def namespace(infra_env: str) -> str:
    return f"desbordante-{infra_env}"


@pytest.fixture(scope="session")
def cfg(infra_env: str) -> Any:
    return load_config(infra_env)


@pytest.fixture
def kubectl_json(host: Any) -> Any:
    """Run `k3s kubectl ... -o json` on the host and parse the answer."""

    def run(*args: str) -> Any:
        out = host.check_output("k3s kubectl " + " ".join(args) + " -o json")
        return json.loads(out)

    return run
