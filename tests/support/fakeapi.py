"""A small fake kube-apiserver on loopback HTTPS that the REAL kubernetes python client talks to.

The client under test is the real one (kubeconfig loading, TLS verification, auth headers,
JSON (de)serialisation, ApiException for 401/403/404/409), so what the toolkit puts on the wire
is what a server sees. This is a fake of the API server's request handling, not a cluster:
nothing schedules, runs, pulls or reconciles anything; tests `seed()` what a kubelet or a
controller would write. RBAC lives in fakeapi_rbac.py, the TLS material in fakeapi_tls.py.

What it models, enforced like kube-apiserver 1.32 does:
- TLS: a CA made per test session with the `openssl` CLI; the serving certificate is for
  127.0.0.1. `kubeconfig_admin()` writes a kubeconfig with a client certificate
  (CN=system:admin, O=system:masters), like the one k3s writes.
- Authentication: client certificates signed by that CA (user = CN, groups = O); bearer tokens
  issued by the TokenRequest API (valid while their ServiceAccount exists with the same UID and
  until they expire) or added with `add_token()`; an unknown or dead token = 401 Unauthorized;
  no credentials = user `system:anonymous`, group `system:unauthenticated`.
- Authorization (RBAC): group system:masters may do anything; anybody else gets the rules of the
  Roles / ClusterRoles bound to the user, one of its groups or its ServiceAccount by a
  RoleBinding in the request's namespace or by a ClusterRoleBinding. Request attributes as the
  real RequestInfo derives them: verb from the method (get, list, watch, create, update, patch,
  delete, deletecollection), `resource/subresource`, API group, namespace (a namespace's own
  URL is in that namespace), name; rules match on verbs, apiGroups, resources, resourceNames and
  `*`. The built-in ClusterRoles `view` and `admin` carry the namespaced rules of the real
  bootstrap policy (abridged: no Secrets in view, no CRDs such as traefik.io in either).
  A denial is 403 with the real Status body and message. /version, /healthz, /livez and /readyz
  are public (system:public-info-viewer); other non-resource paths need authentication.
- Objects of the kinds in RESOURCES: create (201; 409 AlreadyExists; 404 when the namespace does
  not exist), get, list (labelSelector `k=v`, `k==v`, `k!=v`, `k`, `!k`; fieldSelector `a.b=v`),
  update (PUT; 409 Conflict on a stale resourceVersion), patch (merge and strategic-merge patch,
  both applied as a JSON merge patch), delete (404 when missing); uid, resourceVersion,
  creationTimestamp set by the server; Secret `stringData` stored base64 in `data`.
  `status` is a subresource: create drops it, writes of the main resource keep the stored one,
  only `<resource>/status` changes it. Deleting a ServiceAccount invalidates its tokens;
  deleting a namespace deletes its objects at once.
- POST serviceaccounts/<name>/token (TokenRequest, `create serviceaccounts/token`).

Not modeled: discovery (/api, /apis) and OpenAPI, so kubectl cannot use it; watch streams;
server-side apply and dry-run; JSON patch (415); admission (Pod Security, quotas, defaults);
RBAC's escalation checks when creating Roles and RoleBindings; strategic-merge list semantics
(lists are replaced); finalizers, graceful deletion, owner-reference garbage collection;
pods/exec, pods/log and other connect subresources; CRD registration (the kinds are fixed).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import secrets
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from support.fakeapi_rbac import (
    ANONYMOUS,
    BUILTIN_CLUSTER_ROLES,
    MASTERS,
    Info,
    User,
    forbidden_message,
    request_info,
    rule_allows,
    subject_matches,
)
from support.fakeapi_tls import Tls, make_tls

PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+fakeapi",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Kind:
    """One resource the fake serves."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: dict[tuple[str, str], Kind] = {
    (k.group, k.resource): k
    for k in (
        Kind("", "v1", "namespaces", "Namespace", namespaced=False),
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind("", "v1", "secrets", "Secret"),
        Kind("", "v1", "serviceaccounts", "ServiceAccount"),
        Kind("", "v1", "pods", "Pod"),
        Kind("", "v1", "services", "Service"),
        Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
        Kind("", "v1", "events", "Event"),
        Kind("apps", "v1", "deployments", "Deployment"),
        Kind("apps", "v1", "statefulsets", "StatefulSet"),
        Kind("batch", "v1", "jobs", "Job"),
        Kind("batch", "v1", "cronjobs", "CronJob"),
        Kind("networking.k8s.io", "v1", "ingresses", "Ingress"),
        Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
        Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        Kind("traefik.io", "v1alpha1", "middlewares", "Middleware"),
        Kind("coordination.k8s.io", "v1", "leases", "Lease"),
        Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
        Kind(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            namespaced=False,
        ),
    )
}


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    user: str
    code: int


@dataclass
class _Token:
    user: User
    account: tuple[str, str, str] | None = None  # (namespace, name, uid) of a ServiceAccount
    expires: dt.datetime | None = None


class ApiError(Exception):
    """An answer other than success, with the real Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.body = code, status_body(code, reason, message, details)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _group_resource(info: Info) -> str:
    return f"{info.resource}.{info.group}" if info.group else info.resource


def _details(info: Info, name: str | None = None) -> dict[str, Any]:
    return {"name": name or info.name, "group": info.group, "kind": info.resource}


def not_found(info: Info, name: str | None = None, resource: str | None = None) -> ApiError:
    what = resource or _group_resource(info)
    details = _details(info, name) | ({"group": "", "kind": resource} if resource else {})
    return ApiError(404, "NotFound", f'{what} "{name or info.name}" not found', details)


def forbidden(user: User, info: Info) -> ApiError:
    return ApiError(403, "Forbidden", forbidden_message(user, info), _details(info))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _selected(obj: dict[str, Any], labels: str, fields: str) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in labels.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if have.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if have.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif " " in term or "(" in term:
            raise ApiError(400, "BadRequest", f"set-based selector {term!r} is not modeled")
        elif term not in have:
            return False
    for term in filter(None, (t.strip() for t in fields.split(","))):
        path, _, value = term.partition("=")
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if str(current) != value:
            return False
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _timestamp(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


# --- the server --------------------------------------------------------------------------------


class FakeApiServer:
    """The fake API server; use as a context manager (serves on 127.0.0.1, a free port)."""

    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self.requests: list[Recorded] = []
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._tokens: dict[str, _Token] = {}
        self._version = 0
        self._lock = threading.Lock()
        for name, rules in BUILTIN_CLUSTER_ROLES.items():
            self.seed(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": name},
                    "rules": rules,
                }
            )
        self._http: _Server | None = None

    # lifecycle
    def __enter__(self) -> FakeApiServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        context.load_verify_locations(self.tls.ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL
        self._http = _Server(self, context)
        threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def url(self) -> str:
        assert self._http is not None, "use FakeApiServer as a context manager"
        return f"https://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ca_data(self) -> str:
        return base64.b64encode(self.tls.ca_cert.read_bytes()).decode()

    def kubeconfig_admin(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for the cluster admin (client certificate, as k3s writes one)."""

        def data(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {"server": self.url, "certificate-authority-data": self.ca_data},
                }
            ],
            "users": [
                {
                    "name": "default",
                    "user": {
                        "client-certificate-data": data(self.tls.admin_cert),
                        "client-key-data": data(self.tls.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "default",
                    "context": {"cluster": "fake", "user": "default", "namespace": namespace},
                }
            ],
            "current-context": "default",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # test helpers (they bypass authentication and authorization, like a kubelet's writes)
    def add_token(self, token: str, user: str, groups: tuple[str, ...] = ()) -> None:
        self._tokens[token] = _Token(User(user, (*groups, "system:authenticated")))

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store OBJ as it is, status included (what a kubelet or controller would write)."""
        group = obj["apiVersion"].rpartition("/")[0]
        kind = next(k for k in RESOURCES.values() if k.kind == obj["kind"] and k.group == group)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            self._stamp(obj, None)
            self._objects[(group, kind.resource, meta.get("namespace", ""), meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        """The stored object of KIND (e.g. "ConfigMap") or None."""
        for (_, _, ns, obj_name), obj in self._objects.items():
            if obj["kind"] == kind and ns == namespace and obj_name == name:
                return copy.deepcopy(obj)
        return None

    def headers_of(self, path_prefix: str) -> list[dict[str, str]]:
        """Headers of every request whose path starts with PATH_PREFIX."""
        return [r.headers for r in self.requests if r.path.startswith(path_prefix)]

    # request handling
    def handle(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body: bytes,
        peer: dict[str, Any] | None,
    ) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        with self._lock:
            user = User("?")
            try:
                user = self._authenticate(headers, peer)
                code, answer = self._dispatch(method, path, query, headers, body, user)
            except ApiError as error:
                code, answer = error.code, error.body
            self.requests.append(Recorded(method, raw_path, headers, user.name, code))
        return code, answer

    def _authenticate(self, headers: dict[str, str], peer: dict[str, Any] | None) -> User:
        if peer:
            subject = dict(item[0] for item in peer.get("subject", ()))
            groups = tuple(
                value
                for rdn in peer.get("subject", ())
                for key, value in rdn
                if key == "organizationName"
            )
            return User(subject.get("commonName", ""), (*groups, "system:authenticated"))
        auth = headers.get("authorization", "")
        if not auth:
            return User(ANONYMOUS, ("system:unauthenticated",))
        scheme, _, token = auth.partition(" ")
        found = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if found is None or not self._token_alive(found):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return found.user

    def _token_alive(self, token: _Token) -> bool:
        if token.expires is not None and token.expires <= _now():
            return False
        if token.account is None:
            return True
        namespace, name, uid = token.account
        account = self._objects.get(("", "serviceaccounts", namespace, name))
        return account is not None and account["metadata"]["uid"] == uid

    def _rules_for(self, user: User, namespace: str) -> Iterator[dict[str, Any]]:
        bindings = [
            (obj, "") for key, obj in self._objects.items() if key[1] == "clusterrolebindings"
        ]
        if namespace:
            bindings += [
                (obj, namespace)
                for key, obj in self._objects.items()
                if key[1] == "rolebindings" and key[2] == namespace
            ]
        for binding, binding_ns in bindings:
            if not any(subject_matches(s, user, binding_ns) for s in binding.get("subjects", [])):
                continue
            ref = binding["roleRef"]
            if ref["kind"] == "ClusterRole":
                role = self._objects.get(
                    ("rbac.authorization.k8s.io", "clusterroles", "", ref["name"])
                )
            else:
                role = self._objects.get(
                    ("rbac.authorization.k8s.io", "roles", binding_ns, ref["name"])
                )
            yield from (role or {}).get("rules") or []

    def allowed(self, user: User, info: Info) -> bool:
        """RBAC's decision for USER and the request attributes INFO."""
        if MASTERS in user.groups:
            return True
        return any(rule_allows(rule, info) for rule in self._rules_for(user, info.namespace))

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        user: User,
    ) -> tuple[int, Any]:
        info = request_info(method, path, query)
        if info is None:
            if path in PUBLIC_PATHS or MASTERS in user.groups:
                if path == "/version":
                    return 200, VERSION
                if path in PUBLIC_PATHS:
                    return 200, "ok"
            elif user.name == ANONYMOUS:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'forbidden: User "{user.name}" cannot {method.lower()} path "{path}"',
                )
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not self.allowed(user, info):
            raise forbidden(user, info)
        kind = RESOURCES.get((info.group, info.resource))
        if kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        payload = json.loads(body) if body else None
        if info.subresource == "token" and info.resource == "serviceaccounts":
            if info.verb != "create":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return 201, self._token_request(info, payload or {})
        if info.subresource not in ("", "status"):
            raise ApiError(404, "NotFound", f"subresource {info.subresource!r} is not modeled")
        namespace = info.namespace if kind.namespaced else ""
        if info.verb in ("list", "watch"):
            return 200, self._list(kind, namespace, query)
        if info.verb == "create":
            return 201, self._create(kind, info, namespace, payload or {})
        key = (kind.group, kind.resource, namespace, info.name)
        stored = self._objects.get(key)
        if stored is None:
            raise not_found(info)
        if info.verb == "get":
            return 200, copy.deepcopy(stored)
        if info.verb == "delete":
            return 200, self._delete(kind, key, info)
        if info.verb == "update":
            new = payload or {}
            sent = (new.get("metadata") or {}).get("resourceVersion")
            if sent and sent != stored["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {_group_resource(info)} "{info.name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    _details(info),
                )
        else:  # patch
            content_type = headers.get("content-type", "")
            if "json-patch" in content_type:
                raise ApiError(415, "UnsupportedMediaType", "JSON patch is not modeled")
            new = merge_patch(stored, payload or {})
        return 200, self._write(kind, key, stored, new, info.subresource == "status")

    # verbs
    def _list(self, kind: Kind, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        items = [
            copy.deepcopy(obj)
            for (group, resource, ns, _), obj in sorted(self._objects.items())
            if (group, resource) == (kind.group, kind.resource)
            and (not namespace or ns == namespace)
            and _selected(obj, labels, fields)
        ]
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _create(
        self, kind: Kind, info: Info, namespace: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value")
        if namespace and ("", "namespaces", "", namespace) not in self._objects:
            raise not_found(info, namespace, "namespaces")
        key = (kind.group, kind.resource, namespace, name)
        if key in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_group_resource(info)} "{name}" already exists',
                _details(info, name),
            )
        obj.pop("status", None)
        if kind.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        if namespace:
            meta["namespace"] = namespace
        self._store_secret_data(obj)
        self._stamp(obj, None)
        self._objects[key] = obj
        return copy.deepcopy(obj)

    def _write(
        self,
        kind: Kind,
        key: tuple[str, str, str, str],
        stored: dict[str, Any],
        new: dict[str, Any],
        status_only: bool,
    ) -> dict[str, Any]:
        if status_only:
            result = copy.deepcopy(stored)
            result["status"] = new.get("status")
        else:
            result = copy.deepcopy(new)
            if "status" in stored:
                result["status"] = copy.deepcopy(stored["status"])
            result.update(apiVersion=kind.api_version, kind=kind.kind)
            meta = result.setdefault("metadata", {})
            meta.update(name=key[3], **({"namespace": key[2]} if key[2] else {}))
            self._store_secret_data(result)
        self._stamp(result, stored)
        self._objects[key] = result
        return copy.deepcopy(result)

    def _delete(self, kind: Kind, key: tuple[str, str, str, str], info: Info) -> dict[str, Any]:
        del self._objects[key]
        if kind.kind == "Namespace":
            for other in [k for k in self._objects if k[2] == info.name]:
                del self._objects[other]
        return status_body(200, "", "", _details(info))

    def _token_request(self, info: Info, request: dict[str, Any]) -> dict[str, Any]:
        account = self._objects.get(("", "serviceaccounts", info.namespace, info.name))
        if account is None:
            raise not_found(info)
        seconds = int((request.get("spec") or {}).get("expirationSeconds") or 3600)
        expires = _now() + dt.timedelta(seconds=seconds)
        token = secrets.token_urlsafe(24)
        user = User(
            f"system:serviceaccount:{info.namespace}:{info.name}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{info.namespace}",
                "system:authenticated",
            ),
        )
        uid = account["metadata"]["uid"]
        self._tokens[token] = _Token(user, (info.namespace, info.name, uid), expires)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": info.name, "namespace": info.namespace},
            "spec": request.get("spec") or {},
            "status": {"token": token, "expirationTimestamp": _timestamp(expires)},
        }

    # bookkeeping
    def _stamp(self, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        old = (previous or {}).get("metadata", {})
        meta["uid"] = old.get("uid") or meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (
            old.get("creationTimestamp") or meta.get("creationTimestamp") or _timestamp(_now())
        )
        meta["resourceVersion"] = str(self._version)

    @staticmethod
    def _store_secret_data(obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Secret" or "stringData" not in obj:
            return
        data = dict(obj.get("data") or {})
        for key, value in (obj.pop("stringData") or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


class _Server(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1; the TLS handshake runs in each connection's own thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, api: FakeApiServer, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api, self.context = api, context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        peer = self.connection.getpeercert()
        code, answer = self.server.api.handle(self.command, self.path, headers, body, peer)
        data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


# --- pytest fixtures (import them into a test module to use them) -----------------------------


@pytest.fixture(scope="session")
def fake_api_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("fakeapi-tls"))


@pytest.fixture
def fake_api(fake_api_tls: Tls) -> Iterator[FakeApiServer]:
    with FakeApiServer(fake_api_tls) as server:
        yield server
