"""Fixtures shared by the unit tests: the fake API server and the toolkit's admin connection."""

from support.fakeapi import fake_api, fake_api_tls  # noqa: F401 - pytest fixtures
from support.fakeapi_kube import admin, admin_kubeconfig  # noqa: F401 - pytest fixtures
