"""The registry client's HTTP: the 401 challenge flows (Bearer as GHCR answers, Basic as a
docker-registry with htpasswd answers), manifests, image indexes, digests and errors.

The registry here is an httpx.MockTransport that answers like GHCR does (documented flow:
`GET /v2/...` -> 401 `WWW-Authenticate: Bearer realm=...,service=...,scope=...` -> `GET realm`
with Basic credentials -> `{"token": ...}` -> the request again with `Bearer`). The real
docker-registry, with htpasswd (Basic) and in token mode (Bearer), is driven by
tests/integration/test_autoupdate_cycles.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from desbordante_ops.image import registry as reg

AUTH = {"username": "robot", "password": "ghp_s3cret-token"}
REVISION = "3f2a9c1" + "0" * 33
CONFIG = json.dumps({"config": {"Labels": {reg.REVISION_LABEL: REVISION}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


MANIFEST = json.dumps(
    {"mediaType": reg.OCI_MANIFEST, "config": {"digest": CONFIG_DIGEST}, "layers": []}
).encode()
INDEX = json.dumps(
    {
        "mediaType": reg.OCI_INDEX,
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": digest_of(MANIFEST), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
).encode()


class Ghcr:
    """GHCR's answers for ghcr.io/o/backend: tag 3f2a9c1 (a manifest) and v1.0.0 (an index)."""

    def __init__(self, accept: dict[str, str] | None = AUTH, anonymous: bool = False) -> None:
        self.accept, self.anonymous = accept, anonymous
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "ghcr.io" and request.url.path == "/token":
            return self.token(request)
        if request.headers.get("authorization") != "Bearer tok-123":
            challenge = (
                'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
                'scope="repository:o/backend:pull"'
            )
            return httpx.Response(401, headers={"www-authenticate": challenge})
        path = request.url.path
        blobs = {
            "/v2/o/backend/manifests/3f2a9c1": MANIFEST,
            f"/v2/o/backend/manifests/{digest_of(MANIFEST)}": MANIFEST,
            "/v2/o/backend/manifests/v1.0.0": INDEX,
            f"/v2/o/backend/blobs/{CONFIG_DIGEST}": CONFIG,
        }
        if path not in blobs:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body = blobs[path]
        return httpx.Response(200, content=body, headers={"docker-content-digest": digest_of(body)})

    def token(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["service"] == "ghcr.io"
        assert request.url.params["scope"] == "repository:o/backend:pull"
        sent = request.headers.get("authorization")
        if sent is None and self.anonymous:
            return httpx.Response(200, json={"token": "tok-123"})
        pair = f"{self.accept['username']}:{self.accept['password']}" if self.accept else ""
        if sent == "Basic " + base64.b64encode(pair.encode()).decode():
            return httpx.Response(200, json={"token": "tok-123"})
        return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})


def client(handler: Any, auth: dict[str, str] | None = AUTH, image: str = "") -> reg.Registry:
    return reg.Registry(image or "ghcr.io/o/backend", auth, transport=httpx.MockTransport(handler))


def test_the_bearer_challenge_is_answered_with_a_token_got_with_basic_credentials() -> None:
    ghcr = Ghcr()
    with client(ghcr) as registry:
        info = registry.image_info("3f2a9c1")
    assert info is not None
    assert info.digest == digest_of(MANIFEST) and info.revision == REVISION
    assert info.ref == f"ghcr.io/o/backend@{digest_of(MANIFEST)}"
    token_requests = [r for r in ghcr.requests if r.url.path == "/token"]
    assert len(token_requests) == 1  # the token is reused for the config blob
    assert all(r.url.scheme == "https" for r in ghcr.requests)
    accepted = ghcr.requests[0].headers["accept"]
    assert reg.OCI_INDEX in accepted and reg.DOCKER_MANIFEST in accepted


def test_a_public_package_gets_an_anonymous_token() -> None:
    ghcr = Ghcr(accept=None, anonymous=True)
    with client(ghcr, auth=None) as registry:
        assert registry.image_info("3f2a9c1") is not None
    assert all("authorization" not in r.headers for r in ghcr.requests if r.url.path == "/token")


def test_refused_credentials_are_one_line_without_the_password() -> None:
    refusing = Ghcr(accept={"username": "robot", "password": "other"})
    with client(refusing) as registry, pytest.raises(reg.RegistryError) as error:
        registry.image_info("3f2a9c1")
    message = str(error.value)
    assert message.startswith("Token service ghcr.io refused the credentials for o/backend")
    assert AUTH["password"] not in message and "\n" not in message


def test_an_image_index_is_followed_to_linux_amd64_but_keeps_its_own_digest() -> None:
    with client(Ghcr()) as registry:
        info = registry.image_info("v1.0.0")
    assert info is not None
    assert info.digest == digest_of(INDEX)  # what the tag points to, what a pod pins
    assert info.revision == REVISION  # from the amd64 image's config


def test_a_missing_tag_is_none() -> None:
    with client(Ghcr()) as registry:
        assert registry.image_info("feedbee") is None


def test_content_that_does_not_match_its_digest_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=MANIFEST, headers={"docker-content-digest": "sha256:" + "0" * 64}
        )

    with client(handler, auth=None) as registry, pytest.raises(reg.RegistryError, match="digest"):
        registry.image_info("3f2a9c1")


def test_basic_challenge_sends_the_credentials_and_needs_them() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") is None:
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="registry"'})
        return httpx.Response(404)

    with client(handler, image="127.0.0.1:5000/o/backend") as registry:
        assert registry.image_info("x") is None
    assert seen[1] == "Basic " + base64.b64encode(b"robot:ghp_s3cret-token").decode()
    with (
        client(handler, auth=None, image="127.0.0.1:5000/o/backend") as registry,
        pytest.raises(reg.RegistryError, match=r"needs credentials .* REGISTRY_USERNAME"),
    ):
        registry.image_info("x")


def test_loopback_registries_speak_plain_http_others_https() -> None:
    schemes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        return httpx.Response(404)

    for image in ("127.0.0.1:5000/o/b", "localhost:5000/o/b", "ghcr.io/o/b", "o/b"):
        with client(handler, auth=None, image=image) as registry:
            registry.image_info("x")
    assert schemes == ["http", "http", "https", "https"]


def test_credentials_never_go_to_a_plain_http_token_realm_elsewhere() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        challenge = 'Bearer realm="http://auth.example.com/token",service="x"'
        return httpx.Response(401, headers={"www-authenticate": challenge})

    with client(handler) as registry, pytest.raises(reg.RegistryError, match="plain HTTP"):
        registry.image_info("x")


def test_an_unreachable_registry_is_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with client(handler) as registry, pytest.raises(reg.RegistryError) as error:
        registry.image_info("x")
    assert str(error.value) == "Registry ghcr.io is not reachable: Connection refused."


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/n:pull"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://ghcr.io/token",
                        "service": "ghcr.io",
                        "scope": "repository:o/n:pull",
                    },
                )
            ],
        ),
        ('Basic realm="desbordante-test"', [("basic", {"realm": "desbordante-test"})]),
        (
            'Basic realm="a, \\"b\\"", Bearer realm=https://x/t , service=y',
            [("basic", {"realm": 'a, "b"'}), ("bearer", {"realm": "https://x/t", "service": "y"})],
        ),
        ("", []),
    ],
)
def test_www_authenticate_headers_are_parsed(
    header: str, expected: list[tuple[str, dict[str, str]]]
) -> None:
    assert [(c.scheme, c.params) for c in reg.parse_challenges(header)] == expected


def test_docker_hub_names_are_its_api_host_and_library() -> None:
    assert reg.split_image("python") == ("registry-1.docker.io", "library/python")
    assert reg.split_image("ghcr.io/o/n") == ("ghcr.io", "o/n")
    assert reg.split_image("127.0.0.1:5000/n") == ("127.0.0.1:5000", "n")
