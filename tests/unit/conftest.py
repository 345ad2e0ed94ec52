"""Fixtures shared by the unit tests: the fake API server, the toolkit's admin connection,
a console wide enough for one table row per line."""

from support.fakeapi import fake_api, fake_api_tls  # noqa: F401 - pytest fixtures
from support.fakeapi_kube import admin, admin_kubeconfig  # noqa: F401 - pytest fixtures
from support.plans import wide_console  # noqa: F401 - pytest fixture
