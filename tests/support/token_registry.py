"""A docker-registry that authenticates like GHCR: the Bearer token challenge.

Debian's `docker-registry` with `auth: token`: every unauthenticated request gets
`401 WWW-Authenticate: Bearer realm=<token server>,service=...,scope=repository:<name>:pull`;
the token server here (loopback HTTP) checks the client's Basic credentials and answers a JWT
signed RS256 with a throwaway key whose self-signed certificate (openssl CLI) is the registry's
`rootcertbundle`; the registry verifies signature, issuer, audience, expiry and the granted
actions itself. It serves the storage of a Basic-auth registry (tests/support/registry.py), so
images pushed there can be read here.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from support.registry import free_port, serving

SERVICE = "desbordante-test-registry"
ISSUER = "desbordante-test-token-issuer"
TOKEN_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["openssl", *args], input=stdin, capture_output=True, check=True, timeout=60
    )
    return done.stdout


@dataclass
class Issuer:
    """The token signing key and its certificate (the registry's root bundle)."""

    key: Path
    cert: Path

    @classmethod
    def make(cls, directory: Path) -> Issuer:
        key, cert = directory / "issuer.key", directory / "issuer.crt"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-days", "2", "-subj", "/CN=desbordante-test-token-issuer",
        )  # fmt: skip
        return cls(key, cert)

    def token(self, subject: str, repository: str, actions: list[str]) -> str:
        """A JWT the registry accepts for ACTIONS on REPOSITORY."""
        der = _openssl("x509", "-in", str(self.cert), "-outform", "DER")
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + TOKEN_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [{"type": "repository", "name": repository, "actions": actions}],
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = _openssl(
            "dgst", "-sha256", "-sign", str(self.key), stdin=signing_input.encode()
        )
        return f"{signing_input}.{_b64url(signature)}"


@dataclass
class TokenService:
    """Issues pull tokens to USERNAME:PASSWORD (Basic); records what it was asked."""

    issuer: Issuer
    username: str
    password: str
    asked: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, query: dict[str, list[str]], authorization: str) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        scope = (query.get("scope") or [""])[0]
        self.asked.append({"scope": scope, "service": (query.get("service") or [""])[0]})
        if authorization != expected:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        kind, _, rest = scope.partition(":")
        repository, _, actions = rest.rpartition(":")
        if kind != "repository" or not repository:
            return 400, {"errors": [{"code": "DENIED", "message": f"scope {scope!r}"}]}
        granted = [action for action in actions.split(",") if action == "pull"]
        return 200, {"token": self.issuer.token(self.username, repository, granted)}


@dataclass(frozen=True)
class TokenRegistry:
    """A running token-auth registry: its address and the token service behind it."""

    address: str
    service: TokenService


@contextmanager
def _token_server(service: TokenService) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            code, body = service.answer(parse_qs(url.query), self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running(workdir: Path, storage: Path, username: str, password: str) -> Iterator[TokenRegistry]:
    """A token-auth registry over STORAGE on a free 127.0.0.1 port, for the block."""
    workdir.mkdir(parents=True, exist_ok=True)
    service = TokenService(Issuer.make(workdir), username, password)
    with _token_server(service) as realm:
        address = f"127.0.0.1:{free_port()}"
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}},
            "http": {"addr": address},
            "auth": {
                "token": {
                    "realm": realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(service.issuer.cert),
                }
            },
        }
        path = workdir / "config.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with serving(path, address, workdir / "registry.log"):
            yield TokenRegistry(address, service)
