"""Fixtures shared by the unit tests: the fake API server (in process and over HTTPS), the
toolkit's admin connection, a console wide enough for one table row per line."""

from support.fakeapi.fixtures import (  # noqa: F401 - pytest fixtures
    admin,
    admin_kubeconfig,
    fake_api,
    fake_api_tls,
    k3s,
)
from support.plans import wide_console  # noqa: F401 - pytest fixture
