"""The toolkit's connections to the fake API server: in process, or over HTTPS with a kubeconfig.

`kube_for` builds the toolkit's own `Kube` over the REAL kubernetes client whose HTTP pool is
replaced by `InProcess`: every request goes through the client's serialisation and error
handling, then to `FakeApiServer.handle`, as the user given (or the bearer token's owner),
without a socket. `connect_with` uses the toolkit's `connect(cfg)` for a kubeconfig file (the
HTTPS server), what tasks do.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
import yaml
from kubernetes import client as k8s
from support.fakeapi.rbac import MASTERS, User
from support.fakeapi.server import FakeApiServer, encode

from desbordante_ops.cluster import access
from desbordante_ops.cluster.kube.client import Kube, connect
from desbordante_ops.core.plan import execute
from desbordante_ops.core.settings import EnvConfig, load_config

ADMIN = User("system:admin", (MASTERS, "system:authenticated"))
FAKE_HOST = "https://fake-apiserver.invalid"


class InProcess:
    """Stands in for urllib3's PoolManager in the kubernetes client's REST layer."""

    def __init__(self, server: FakeApiServer, user: User) -> None:
        self.server, self.user = server, user

    def request(
        self,
        method: str,
        url: str,
        fields: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        preload_content: bool = True,
        timeout: Any = None,
        **_: Any,
    ) -> urllib3.HTTPResponse:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if fields:
            path += ("&" if "?" in path else "?") + urlencode(list(fields))
        data = body.encode() if isinstance(body, str) else (body or b"")
        lowered = {key.lower(): str(value) for key, value in (headers or {}).items()}
        code, answer = self.server.handle(method, path, lowered, data, user=self.user)
        payload, content_type = encode(answer)
        return urllib3.HTTPResponse(
            body=io.BytesIO(payload),
            headers={"Content-Type": content_type, "Content-Length": str(len(payload))},
            status=code,
            reason=HTTPStatus(code).phrase,
            preload_content=preload_content,
            decode_content=False,
        )


def _ca_file() -> str:
    """A CA bundle file for in-process connections (what a kubeconfig hands `access.grant`)."""
    path = Path(tempfile.gettempdir()) / "desbordante-fakeapi-ca.pem"
    if not path.exists():
        path.write_text("-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n")
    return str(path)


def kube_for(server: FakeApiServer, user: User = ADMIN, token: str | None = None) -> Kube:
    """The toolkit's Kube talking to SERVER in process as USER (or as TOKEN's owner)."""
    configuration = k8s.Configuration()
    configuration.host = FAKE_HOST
    configuration.ssl_ca_cert = _ca_file()
    if token:
        configuration.api_key = {"authorization": f"Bearer {token}"}
    api_client = k8s.ApiClient(configuration)
    api_client.rest_client.pool_manager = InProcess(server, user)
    return Kube.of(api_client)


def token_of(kubeconfig: Path) -> str:
    """The bearer token of a kubeconfig written by `access.grant`."""
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


def config_for(path: Path, env: str = "stage") -> EnvConfig:
    """ENV's settings with the kubeconfig at PATH (nothing from the process environment)."""
    return load_config(env, flags={"KUBECONFIG_PATH": str(path)}, environ={})


def connect_with(path: Path, env: str = "stage") -> Kube:
    """The toolkit's `connect` for the kubeconfig at PATH (the HTTPS server)."""
    return connect(config_for(path, env))


def grant(admin: Kube, directory: Path, role: str, user: str = "jane", env: str = "stage") -> Path:
    """`access.grant` of ROLE in ENV to USER over the admin's connection; its kubeconfig."""
    out = directory / f"{user}-{env}-{role}.kubeconfig"
    execute(access.grant_plan(admin, f"desbordante-{env}", user, role, out, days=30))
    return out
