"""What a registry holds under a tag: a small client of the OCI distribution API (httpx).

`Registry(image, auth).image(tag)` answers the manifest digest of `<image>:<tag>` and the OCI
labels of its config (`org.opencontainers.image.revision` ...), or None when the tag does not
exist. An image index (multi-platform) is followed to its linux/amd64 manifest for the labels;
the digest stays the index's, which is what the tag points to and what a pod pins.

Authentication follows the registry's 401 challenge (`WWW-Authenticate`, RFC 7235):
- `Basic` (e.g. a `docker-registry` with htpasswd): the credentials as HTTP Basic;
- `Bearer realm=...,service=...,scope=...` (GHCR, Docker Hub): a token from the realm, asked
  with the credentials as HTTP Basic (anonymously without them: public packages), then sent as
  `Authorization: Bearer`.
Plain HTTP only to loopback registries (as Docker does); credentials never go to a plain-HTTP
realm elsewhere, and nothing here prints them.

Why not a library: python-dxf refuses credentials over plain HTTP even on loopback (so it cannot
talk to the test registry) and rewrites every token realm to https; oras-py needs the auth
scheme chosen up front instead of following the challenge. The client needs four GETs.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from desbordante_ops.image.refs import repository_path

REVISION_LABEL = "org.opencontainers.image.revision"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
PLATFORM = {"os": "linux", "architecture": "amd64"}
DOCKER_HUB_API = "registry-1.docker.io"
TIMEOUT_SECONDS = 20.0
MAX_JSON_BYTES = 4 * 1024 * 1024  # manifests and configs are a few KiB
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# WWW-Authenticate tokens: an auth-param `key=token` / `key="quoted"`, or a scheme name.
_AUTH_TOKEN = re.compile(
    r'[\s,]*(?:(?P<key>[A-Za-z][\w.-]*)\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s,]*)'
    r"|(?P<scheme>[A-Za-z][\w.+-]*))"
)


class RegistryError(Exception):
    """A registry answer we cannot use; the message is one line that says what to do."""


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge of a 401 answer."""

    scheme: str  # lower case: basic, bearer
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a WWW-Authenticate header, e.g.
    `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/n:pull"`."""
    found: list[Challenge] = []
    for token in _AUTH_TOKEN.finditer(header):
        if token["scheme"]:
            found.append(Challenge(token["scheme"].lower()))
        elif token["key"] and found:
            value = token["value"]
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found[-1].params[token["key"].lower()] = value
    return found


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 (with or without a port)."""
    if host.startswith("["):  # [::1] or [::1]:5000
        name = host[1 : host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_image(image: str) -> tuple[str, str]:
    """(registry host, repository path) of an image name without tag or digest."""
    path = repository_path(image)
    if path != image:
        return image[: -len(path) - 1], path
    return DOCKER_HUB_API, path if "/" in path else f"library/{path}"


@dataclass(frozen=True)
class ImageInfo:
    """What REPOSITORY:TAG is in the registry: its manifest DIGEST and its config's LABELS."""

    repository: str
    tag: str
    digest: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        return self.labels.get(REVISION_LABEL, "")

    @property
    def ref(self) -> str:
        """`repo@sha256:...`: the exact image, whatever the tag points to later."""
        return f"{self.repository}@{self.digest}"


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Registry:
    """Read access to one repository of a registry (a context manager: closes its connections).

    AUTH is {"username", "password"} or None (anonymous); TRANSPORT replaces the network in
    tests (httpx.MockTransport).
    """

    def __init__(
        self,
        image: str,
        auth: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.image = image
        self.host, self.path = split_image(image)
        self.secure = not is_loopback(self.host)
        self._auth = dict(auth) if auth else None
        self._authorization: str | None = None
        self._client = httpx.Client(
            base_url=f"{'https' if self.secure else 'http'}://{self.host}/v2/",
            timeout=timeout,
            transport=transport,
            follow_redirects=True,  # blobs redirect to storage; httpx drops our
            # Authorization header on a redirect to another host
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # --- HTTP and authentication --------------------------------------------------------------

    def _send(self, url: str, accept: str) -> httpx.Response:
        headers = {"Accept": accept}
        if self._authorization:
            headers["Authorization"] = self._authorization
        try:
            return self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise RegistryError(f"Registry {self.host} is not reachable: {detail}.") from None

    def get(self, url: str, accept: str = "application/json") -> httpx.Response | None:
        """GET URL (relative to /v2/), authenticating on a 401; None for 404."""
        response = self._send(url, accept)
        if response.status_code == 401:
            self._authorization = self._answer(response)
            response = self._send(url, accept)
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            who = f"as {self._auth['username']}" if self._auth else "anonymously"
            raise RegistryError(
                f"Registry {self.host} refused to show {self.path} {who} "
                f"(HTTP {response.status_code}); check the credentials (REGISTRY_USERNAME, "
                "REGISTRY_PASSWORD_FILE) and that they may read the package."
            )
        if response.status_code != 200:
            raise RegistryError(
                f"Registry {self.host} answered HTTP {response.status_code} for {self.path}; "
                "try again later."
            )
        return response

    def _answer(self, response: httpx.Response) -> str:
        """The Authorization header that answers RESPONSE's challenge."""
        header = response.headers.get("www-authenticate", "")
        challenges = {challenge.scheme: challenge for challenge in parse_challenges(header)}
        if "bearer" in challenges:
            return f"Bearer {self._token(challenges['bearer'])}"
        if "basic" in challenges:
            if self._auth is None:
                raise RegistryError(
                    f"Registry {self.host} needs credentials for {self.path}: set "
                    "REGISTRY_USERNAME and REGISTRY_PASSWORD_FILE (autoupdate.enable stores them)."
                )
            return self._basic()
        raise RegistryError(
            f"Registry {self.host} asks for an authentication scheme this client does not "
            f"speak ({_one_line(response.headers.get('www-authenticate', 'none'), 60)})."
        )

    def _basic(self) -> str:
        assert self._auth is not None
        pair = f"{self._auth['username']}:{self._auth['password']}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    def _token(self, challenge: Challenge) -> str:
        """A bearer token from the challenge's realm, for pulling our repository."""
        realm = challenge.params.get("realm", "")
        url = httpx.URL(realm) if realm else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise RegistryError(f"Registry {self.host} gave no usable token realm ({realm!r}).")
        if url.scheme == "http" and not is_loopback(url.netloc.decode()):
            raise RegistryError(
                f"Registry {self.host} asks for credentials over plain HTTP ({realm}); refused."
            )
        params = {"scope": challenge.params.get("scope") or f"repository:{self.path}:pull"}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        headers = {"Authorization": self._basic()} if self._auth else {}
        try:
            answer = self._client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"Token service {url.host} of registry {self.host} is not reachable: "
                f"{_one_line(str(exc)) or type(exc).__name__}."
            ) from None
        if answer.status_code in (401, 403):
            raise RegistryError(
                f"Token service {url.host} refused the credentials for {self.path} (HTTP "
                f"{answer.status_code}); check REGISTRY_USERNAME and the token's read:packages "
                "scope."
            )
        try:
            body = answer.json() if answer.status_code == 200 else {}
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"Token service {url.host} answered HTTP {answer.status_code} without a token."
            )
        return token

    # --- manifests and configs ------------------------------------------------------------

    def _json(self, response: httpx.Response, expected: str | None) -> tuple[str, Any]:
        """(digest of the body, parsed JSON); the digest must be EXPECTED (or the header's)."""
        body = response.content
        if len(body) > MAX_JSON_BYTES:
            raise RegistryError(f"Registry {self.host} sent a {len(body)}-byte manifest; refused.")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = expected or response.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise RegistryError(
                f"Registry {self.host} sent content that does not match its digest {claimed}."
            )
        try:
            return digest, json.loads(body)
        except ValueError:
            raise RegistryError(f"Registry {self.host} sent a manifest that is not JSON.") from None

    def manifest(self, reference: str) -> tuple[str, dict[str, Any]] | None:
        """(digest, manifest) of REFERENCE (a tag or a digest); None when it does not exist."""
        response = self.get(f"{self.path}/manifests/{reference}", ACCEPT)
        if response is None:
            return None
        digest, doc = self._json(response, reference if DIGEST.match(reference) else None)
        if not isinstance(doc, dict):
            raise RegistryError(f"Registry {self.host} sent a manifest that is not an object.")
        return digest, doc

    def _platform_manifest(self, index: dict[str, Any]) -> dict[str, Any]:
        for entry in index.get("manifests") or []:
            platform = entry.get("platform") or {}
            if all(platform.get(key) == value for key, value in PLATFORM.items()):
                found = self.manifest(str(entry.get("digest", "")))
                if found is not None:
                    return found[1]
        raise RegistryError(
            f"{self.image}: the image index has no {PLATFORM['os']}/{PLATFORM['architecture']} "
            "image (the server's platform)."
        )

    def labels(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The OCI labels in the config of MANIFEST (an image index: its linux/amd64 image's)."""
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            manifest = self._platform_manifest(manifest)
        digest = str((manifest.get("config") or {}).get("digest", ""))
        if not DIGEST.match(digest):
            raise RegistryError(f"{self.image}: the manifest names no config blob.")
        response = self.get(f"{self.path}/blobs/{digest}")
        if response is None:
            raise RegistryError(f"{self.image}: config blob {digest[:19]} is missing.")
        _, config = self._json(response, digest)
        labels = ((config or {}).get("config") or {}).get("Labels") or {}
        return {str(key): str(value) for key, value in labels.items()}

    def image_info(self, reference: str) -> ImageInfo | None:
        """The image under REFERENCE (tag or digest) with its labels; None when absent."""
        found = self.manifest(reference)
        if found is None:
            return None
        digest, manifest = found
        tag = "" if DIGEST.match(reference) else reference
        return ImageInfo(self.image, tag, digest, self.labels(manifest))
