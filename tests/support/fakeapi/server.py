"""The fake kube-apiserver: the one Kubernetes fake of the test suite.

The client under test is always the REAL kubernetes python client (its kubeconfig loading,
serialisation, ApiException for 401/403/404/409/422), talking to this server either over
loopback HTTPS (`with FakeApiServer(tls) as server`, for what goes on the wire: TLS, bearer
tokens) or in process (`connect.kube_for`, the same request handling without a socket). This is
a fake of the API server's request handling, not a cluster: nothing schedules, runs or pulls
anything. What kubelets and controllers would write, `kubelet.Kubelet` writes when it is
switched on, or tests `seed()` it.

Enforced like kube-apiserver 1.32:
- authentication: client certificates of the test CA (user = CN, groups = O), bearer tokens
  from the TokenRequest API (valid while their ServiceAccount exists with the same UID and until
  they expire) or `add_token()`; an unknown or dead token = 401; none = system:anonymous;
- authorization (RBAC, fakeapi/rbac.py): system:masters may do anything; anybody else gets the
  rules of the Roles/ClusterRoles bound to the user, its groups or its ServiceAccount. A denial
  is 403 with the real Status body and message. SelfSubjectAccessReview answers with the same
  decision. Discovery and /version are open to every authenticated user;
- discovery: /api, /api/v1, /apis and /apis/<group>/<version>; CRD groups (traefik.io,
  helm.cattle.io) only while installed (`crds`), 404 otherwise, and so are their objects;
- objects (fakeapi/kinds.py): create (201; 409 AlreadyExists; 404 when the namespace does not
  exist; 422 for a name that is not a DNS name, or a Job/Service/Namespace name longer than a
  label), get, list (label selectors as support/selectors.py, field selectors `a.b=v`), update
  (409 on a stale resourceVersion), patch (JSON merge and strategic merge, both applied as a
  merge patch; server-side apply with fieldManager/force and conflicts, fakeapi/fields.py),
  delete (404 when missing; the objects it owns go too, by ownerReferences; a namespace takes
  everything in it). `dryRun=All` on any write: everything checked, nothing stored;
- immutable fields: a Job's spec.template and spec.selector, a StatefulSet's spec other than
  replicas/template/updateStrategy/minReadySeconds/ordinals/retention policy (422);
- server-set metadata: uid, resourceVersion, generation (bumped when the spec changes),
  creationTimestamp, managedFields; Secret `stringData` stored base64 in `data`; `status` is a
  subresource (create drops it, writes of the main resource keep the stored one);
- pods/log: the text `logs` holds, 204 No Content when there is none; nodes/proxy stats/summary
  from `node_stats`; TokenRequest (`create serviceaccounts/token`).
Not modeled: watch streams, pods/exec (tests pass the toolkit a PodExec instead), admission
other than Pod Security of the pods the Kubelet starts, defaulting, finalizers and graceful
deletion (deletes are immediate), OpenAPI (so kubectl cannot use this server).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import re
import secrets
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from support import selectors
from support.fakeapi import fields
from support.fakeapi.kinds import (
    BY_KIND,
    CRD_GROUPS,
    RESOURCES,
    Kind,
    group_list,
    resource_list,
)
from support.fakeapi.rbac import (
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
from support.fakeapi.tls import Tls

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
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAMED = ("Job", "Service", "Namespace")  # names that must be DNS labels (<= 63)
STATEFULSET_MUTABLE = {
    "replicas",
    "template",
    "updateStrategy",
    "minReadySeconds",
    "ordinals",
    "persistentVolumeClaimRetentionPolicy",
}
APPLY_PATCH = "application/apply-patch+yaml"
DEFAULT_MANAGER = "OpenAPI-Generator"  # what the python client's User-Agent gives
Key = tuple[str, str, str, str]  # (group, resource, namespace, name)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def timestamp(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


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

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
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


def _details(kind: Kind, name: str) -> dict[str, Any]:
    return {"name": name, "group": kind.group, "kind": kind.resource}


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{kind.group_resource} "{name}" not found', _details(kind, name)
    )


def invalid(kind: Kind, name: str, cause: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: {cause}',
        _details(kind, name),
    )


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


def _field_selected(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        path, _, value = term.partition("=")
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if str(current) != value:
            return False
    return True


def _spec_of(obj: dict[str, Any]) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


Answer = tuple[int, Any]  # (HTTP code, JSON-able body, a str for text, or None for no body)


class FakeApiServer:
    """The fake API server. As a context manager it serves HTTPS on 127.0.0.1 (a free port);
    `connect.kube_for` talks to it in process."""

    def __init__(self, tls: Tls | None = None) -> None:
        self.tls = tls
        self.requests: list[Recorded] = []
        self.objects: dict[Key, dict[str, Any]] = {}
        self.crds: set[str] = set(CRD_GROUPS)
        # (namespace, pod, container) -> log text (absent or None: 204 No Content)
        self.logs: dict[tuple[str, str, str], str | None] = {}
        self.node_stats: dict[str, dict[str, Any]] = {}  # node -> the kubelet's stats/summary
        self.after_write: list[Callable[[FakeApiServer, Kind, dict[str, Any]], None]] = []
        self.after_delete: list[Callable[[FakeApiServer, Kind, dict[str, Any]], None]] = []
        self._tokens: dict[str, _Token] = {}
        self._version = 0
        self.lock = threading.RLock()
        self._http: _Server | None = None
        for name, rules in BUILTIN_CLUSTER_ROLES.items():
            self.seed(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": name},
                    "rules": rules,
                }
            )

    # --- HTTPS ----------------------------------------------------------------------------

    def __enter__(self) -> FakeApiServer:
        assert self.tls is not None, "HTTPS needs the TLS material (fakeapi.tls.make_tls)"
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
        assert self._http is not None, "use FakeApiServer as a context manager for HTTPS"
        return f"https://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ca_data(self) -> str:
        assert self.tls is not None
        return base64.b64encode(self.tls.ca_cert.read_bytes()).decode()

    def kubeconfig_admin(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for the cluster admin (client certificate, as k3s writes one)."""
        assert self.tls is not None

        def data(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        user = {
            "client-certificate-data": data(self.tls.admin_cert),
            "client-key-data": data(self.tls.admin_key),
        }
        return self._kubeconfig(path, user, namespace)

    def kubeconfig_token(self, path: Path, token: str, namespace: str = "default") -> Path:
        """Write a kubeconfig with a bearer token (what `access.grant` hands out)."""
        return self._kubeconfig(path, {"token": token}, namespace)

    def _kubeconfig(self, path: Path, user: dict[str, str], namespace: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {"server": self.url, "certificate-authority-data": self.ca_data},
                }
            ],
            "users": [{"name": "default", "user": user}],
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

    # --- test helpers (they bypass authentication and authorization, like a kubelet) -------

    def add_token(self, token: str, user: str, groups: tuple[str, ...] = ()) -> None:
        self._tokens[token] = _Token(User(user, (*groups, "system:authenticated")))

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store OBJ as it is, status included (what a kubelet or controller would write)."""
        with self.lock:
            kind = BY_KIND[(obj["apiVersion"], obj["kind"])]
            meta = obj.setdefault("metadata", {})
            self._stamp(obj, None)
            self.objects[self.key(kind, meta.get("namespace", ""), meta["name"])] = obj
            return copy.deepcopy(obj)

    def put(self, obj: dict[str, Any], manager: str = "kube-controller-manager") -> dict[str, Any]:
        """Create or replace OBJ as a controller would (no RBAC; ownership and hooks apply)."""
        with self.lock:
            kind = BY_KIND[(obj["apiVersion"], obj["kind"])]
            meta = obj.setdefault("metadata", {})
            key = self.key(kind, meta.get("namespace", ""), meta["name"])
            stored = self.objects.get(key)
            new = fields.update(stored, obj, manager, sent_managed=False)
            if stored is not None and "status" not in obj and "status" in stored:
                new["status"] = copy.deepcopy(stored["status"])
            self._stamp(new, stored)
            self.objects[key] = new
            return copy.deepcopy(new)

    def create_as(self, obj: dict[str, Any], manager: str) -> dict[str, Any]:
        """Create OBJ as the client MANAGER would (no RBAC; ownership and hooks apply)."""
        with self.lock:
            kind = BY_KIND[(obj["apiVersion"], obj["kind"])]
            namespace = (obj.get("metadata") or {}).get("namespace", "")
            return self._create(
                kind,
                namespace if kind.namespaced else "",
                copy.deepcopy(obj),
                manager,
                dry_run=False,
            )

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        """The stored object of KIND (e.g. "ConfigMap") or None."""
        for (_, _, ns, obj_name), obj in self.objects.items():
            if obj["kind"] == kind and ns == namespace and obj_name == name:
                return copy.deepcopy(obj)
        return None

    def all(
        self, kind: str, namespace: str | None = None, selector: str = ""
    ) -> list[dict[str, Any]]:
        """Every stored object of KIND (in NAMESPACE, matching the label SELECTOR), by name."""
        return [
            copy.deepcopy(obj)
            for (_, _, ns, _), obj in sorted(self.objects.items())
            if obj["kind"] == kind
            and (namespace is None or ns == namespace)
            and selectors.matches(selector, (obj.get("metadata") or {}).get("labels"))
        ]

    def remove(self, kind: str, name: str, namespace: str = "") -> None:
        """Delete an object as a controller would (owned objects go too)."""
        with self.lock:
            for key, obj in list(self.objects.items()):
                if obj["kind"] == kind and key[2] == namespace and key[3] == name:
                    self._delete(key)

    def headers_of(self, path_prefix: str) -> list[dict[str, str]]:
        """Headers of every request whose path starts with PATH_PREFIX."""
        return [r.headers for r in self.requests if r.path.startswith(path_prefix)]

    def writes(self, method: str | None = None) -> list[Recorded]:
        """Requests that wrote (POST/PUT/PATCH/DELETE, dry runs included), in order."""
        wanted = (method,) if method else ("POST", "PUT", "PATCH", "DELETE")
        return [r for r in self.requests if r.method in wanted]

    @staticmethod
    def key(kind: Kind, namespace: str, name: str) -> Key:
        return (kind.group, kind.resource, namespace if kind.namespaced else "", name)

    # --- request handling -------------------------------------------------------------------

    def handle(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body: bytes,
        peer: dict[str, Any] | None = None,
        user: User | None = None,
    ) -> Answer:
        """Answer one request: (code, body). PEER: the TLS client certificate; USER: who
        a caller in process is (instead of a certificate)."""
        url = urlsplit(raw_path)
        path = unquote(url.path).rstrip("/") or "/"  # `stats%2Fsummary` as kube-apiserver reads it
        query = parse_qs(url.query)
        with self.lock:
            who = User("?")
            try:
                who = user if user is not None else self._authenticate(headers, peer)
                if user is not None and headers.get("authorization"):
                    who = self._authenticate(headers, None)
                code, answer = self._dispatch(method, path, query, headers, body, who)
            except ApiError as error:
                code, answer = error.code, error.body
            self.requests.append(Recorded(method, raw_path, headers, who.name, code))
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
        if token.expires is not None and token.expires <= now():
            return False
        if token.account is None:
            return True
        namespace, name, uid = token.account
        account = self.objects.get(("", "serviceaccounts", namespace, name))
        return account is not None and account["metadata"]["uid"] == uid

    def _rules_for(self, user: User, namespace: str) -> Iterator[dict[str, Any]]:
        bindings = [
            (obj, "") for key, obj in self.objects.items() if key[1] == "clusterrolebindings"
        ]
        if namespace:
            bindings += [
                (obj, namespace)
                for key, obj in self.objects.items()
                if key[1] == "rolebindings" and key[2] == namespace
            ]
        for binding, binding_ns in bindings:
            if not any(subject_matches(s, user, binding_ns) for s in binding.get("subjects", [])):
                continue
            ref = binding["roleRef"]
            if ref["kind"] == "ClusterRole":
                role = self.objects.get(
                    ("rbac.authorization.k8s.io", "clusterroles", "", ref["name"])
                )
            else:
                role = self.objects.get(
                    ("rbac.authorization.k8s.io", "roles", binding_ns, ref["name"])
                )
            yield from (role or {}).get("rules") or []

    def allowed(self, user: User, info: Info) -> bool:
        """RBAC's decision for USER and the request attributes INFO."""
        if MASTERS in user.groups:
            return True
        return any(rule_allows(rule, info) for rule in self._rules_for(user, info.namespace))

    def _non_resource(self, method: str, path: str, user: User) -> Answer:
        if path in PUBLIC_PATHS:
            return (200, VERSION) if path == "/version" else (200, "ok")
        if user.name == ANONYMOUS:
            raise ApiError(
                403,
                "Forbidden",
                f'forbidden: User "{user.name}" cannot {method.lower()} path "{path}"',
            )
        parts = [p for p in path.split("/") if p]
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            return 200, group_list(self.crds)
        found = None
        if parts == ["api", "v1"]:
            found = resource_list("", "v1", self.crds)
        elif len(parts) == 3 and parts[0] == "apis":
            found = resource_list(parts[1], parts[2], self.crds)
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return 200, found

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        user: User,
    ) -> Answer:
        info = request_info(method, path, query)
        if info is None:
            return self._non_resource(method, path, user)
        payload = json.loads(body) if body else None
        if (info.group, info.resource) == ("authorization.k8s.io", "selfsubjectaccessreviews"):
            if user.name == ANONYMOUS:
                raise ApiError(403, "Forbidden", forbidden_message(user, info))
            return 201, self._access_review(user, payload or {})
        if not self.allowed(user, info):
            raise ApiError(
                403,
                "Forbidden",
                forbidden_message(user, info),
                {"name": info.name, "group": info.group, "kind": info.resource},
            )
        kind = RESOURCES.get((info.group, info.resource))
        if kind is None or (kind.group in CRD_GROUPS and kind.group not in self.crds):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = info.namespace if kind.namespaced else ""
        dry_run = query.get("dryRun", [""])[0] == "All"
        if info.subresource == "token" and info.resource == "serviceaccounts":
            return 201, self._token_request(info, payload or {})
        if info.subresource == "log" and info.resource == "pods":
            return self._pod_log(namespace, info.name, query)
        if info.subresource == "proxy" and info.resource == "nodes":
            return self._node_proxy(info.name, path)
        if info.subresource not in ("", "status"):
            raise ApiError(404, "NotFound", f"subresource {info.subresource!r} is not modeled")
        if info.verb in ("list", "watch"):
            if info.verb == "watch":
                raise ApiError(400, "BadRequest", "watch is not modeled")
            return 200, self._list(kind, namespace, query)
        manager = query.get("fieldManager", [""])[0] or DEFAULT_MANAGER
        if info.verb == "create":
            return 201, self._create(kind, namespace, payload or {}, manager, dry_run)
        key = self.key(kind, namespace, info.name)
        stored = self.objects.get(key)
        content_type = headers.get("content-type", "")
        if stored is None and content_type.startswith(APPLY_PATCH):
            return 201, self._apply(kind, key, None, payload or {}, manager, query, dry_run)
        if stored is None:
            raise not_found(kind, info.name)
        if info.verb == "get":
            return 200, copy.deepcopy(stored)
        if info.verb == "delete":
            return 200, self._delete(key, dry_run, kind, info.name)
        status_only = info.subresource == "status"
        if info.verb == "update":
            new = payload or {}
            sent = (new.get("metadata") or {}).get("resourceVersion")
            if sent and sent != stored["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.group_resource} "{info.name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    _details(kind, info.name),
                )
            sent_managed = bool((new.get("metadata") or {}).get("managedFields"))
        elif content_type.startswith(APPLY_PATCH):
            return 200, self._apply(kind, key, stored, payload or {}, manager, query, dry_run)
        else:
            if "json-patch" in content_type:
                raise ApiError(415, "UnsupportedMediaType", "JSON patch is not modeled")
            new = merge_patch(stored, payload or {})
            sent_managed = "managedFields" in ((payload or {}).get("metadata") or {})
        return 200, self._write(kind, key, stored, new, manager, status_only, sent_managed, dry_run)

    # --- verbs --------------------------------------------------------------------------

    def _list(self, kind: Kind, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        labels = query.get("labelSelector", [""])[0]
        field_selector = query.get("fieldSelector", [""])[0]
        try:
            items = [
                copy.deepcopy(obj)
                for (group, resource, ns, _), obj in sorted(self.objects.items())
                if (group, resource) == (kind.group, kind.resource)
                and (not namespace or ns == namespace)
                and selectors.matches(labels, (obj.get("metadata") or {}).get("labels"))
                and _field_selected(obj, field_selector)
            ]
        except ValueError as error:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {error}") from None
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _validate(self, kind: Kind, obj: dict[str, Any], stored: dict[str, Any] | None) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value")
        pattern, limit = (DNS_LABEL, 63) if kind.kind in LABEL_NAMED else (DNS_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.match(name):
            raise invalid(
                kind,
                name,
                f"metadata.name: Invalid value: {name!r}: must be a valid "
                f"DNS {'label' if limit == 63 else 'subdomain'} (at most {limit} "
                "characters)",
            )
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                raise invalid(kind, name, f"metadata.labels: Invalid value: {value!r} ({key})")
        if stored is None:
            return
        if kind.kind == "Job":
            for part in ("template", "selector"):
                before = stored.get("spec", {}).get(part)
                after = obj.get("spec", {}).get(part)
                if part == "selector" and after is None:
                    continue
                if before != after:
                    raise invalid(kind, name, f"spec.{part}: Invalid value: field is immutable")
        if kind.kind == "StatefulSet":
            before = {
                k: v for k, v in stored.get("spec", {}).items() if k not in STATEFULSET_MUTABLE
            }
            after = {k: v for k, v in obj.get("spec", {}).items() if k not in STATEFULSET_MUTABLE}
            if before != after:
                raise invalid(
                    kind,
                    name,
                    "spec: Forbidden: updates to statefulset spec for fields other than "
                    "'replicas', 'ordinals', 'template', 'updateStrategy', "
                    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                )

    def _create(
        self, kind: Kind, namespace: str, obj: dict[str, Any], manager: str, dry_run: bool
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if not name and meta.get("generateName"):
            name = meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        self._validate(kind, obj, None)
        if namespace and ("", "namespaces", "", namespace) not in self.objects:
            raise not_found(RESOURCES[("", "namespaces")], namespace)
        key = self.key(kind, namespace, name)
        if key in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.group_resource} "{name}" already exists',
                _details(kind, name),
            )
        obj.pop("status", None)
        if kind.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        if namespace:
            meta["namespace"] = namespace
        self._store_secret_data(obj)
        new = fields.update(None, obj, manager, sent_managed=False)
        return self._commit(kind, key, None, new, dry_run)

    def _apply(
        self,
        kind: Kind,
        key: Key,
        stored: dict[str, Any] | None,
        config: dict[str, Any],
        manager: str,
        query: dict[str, list[str]],
        dry_run: bool,
    ) -> dict[str, Any]:
        if query.get("fieldManager", [""])[0] == "":
            raise ApiError(400, "BadRequest", "PATCH requests with apply require fieldManager")
        if (config.get("apiVersion"), config.get("kind")) != (kind.api_version, kind.kind):
            raise ApiError(400, "BadRequest", "apply: apiVersion and kind must match the URL")
        if stored is None and key[2] and ("", "namespaces", "", key[2]) not in self.objects:
            raise not_found(RESOURCES[("", "namespaces")], key[2])
        force = query.get("force", [""])[0] == "true"
        config = copy.deepcopy(config)
        meta = config.setdefault("metadata", {})
        meta["name"] = key[3]
        if key[2]:
            meta["namespace"] = key[2]
        self._store_secret_data(config)
        try:
            new = fields.apply(stored, config, manager, force)
        except fields.Conflict as conflict:
            raise ApiError(409, "Conflict", str(conflict), _details(kind, key[3])) from None
        if stored is not None and "status" in stored:
            new["status"] = copy.deepcopy(stored["status"])
        else:
            new.pop("status", None)
        self._validate(kind, new, stored)
        return self._commit(kind, key, stored, new, dry_run)

    def _write(
        self,
        kind: Kind,
        key: Key,
        stored: dict[str, Any],
        new: dict[str, Any],
        manager: str,
        status_only: bool,
        sent_managed: bool,
        dry_run: bool,
    ) -> dict[str, Any]:
        if status_only:
            result = copy.deepcopy(stored)
            result["status"] = new.get("status")
        else:
            result = copy.deepcopy(new)
            if "status" in stored:
                result["status"] = copy.deepcopy(stored["status"])
            else:
                result.pop("status", None)
            result.update(apiVersion=kind.api_version, kind=kind.kind)
            meta = result.setdefault("metadata", {})
            meta.update(name=key[3], **({"namespace": key[2]} if key[2] else {}))
            self._store_secret_data(result)
            self._validate(kind, result, stored)
            result = fields.update(stored, result, manager, sent_managed)
        return self._commit(kind, key, stored, result, dry_run)

    def _commit(
        self,
        kind: Kind,
        key: Key,
        stored: dict[str, Any] | None,
        new: dict[str, Any],
        dry_run: bool,
    ) -> dict[str, Any]:
        if dry_run:
            preview = copy.deepcopy(new)
            meta = preview.setdefault("metadata", {})
            meta.setdefault("uid", (stored or {}).get("metadata", {}).get("uid", ""))
            meta["resourceVersion"] = (stored or {}).get("metadata", {}).get("resourceVersion", "")
            meta["generation"] = self._generation(stored, new)
            return preview
        self._stamp(new, stored)
        self.objects[key] = new
        for hook in list(self.after_write):
            hook(self, kind, copy.deepcopy(new))
        return copy.deepcopy(self.objects.get(key, new))

    def _delete(
        self, key: Key, dry_run: bool = False, kind: Kind | None = None, name: str = ""
    ) -> dict[str, Any]:
        obj = self.objects.get(key)
        if obj is None:
            raise not_found(kind or RESOURCES[(key[0], key[1])], name or key[3])
        if not dry_run:
            del self.objects[key]
            uid = obj["metadata"].get("uid")
            owned = [
                other
                for other, candidate in self.objects.items()
                if uid
                and any(
                    ref.get("uid") == uid
                    for ref in (candidate.get("metadata") or {}).get("ownerReferences") or []
                )
            ]
            if obj["kind"] == "Namespace":
                owned += [other for other in self.objects if other[2] == key[3]]
            for other in dict.fromkeys(owned):
                if other in self.objects:
                    self._delete(other)
            deleted_kind = RESOURCES[(key[0], key[1])]
            for hook in list(self.after_delete):
                hook(self, deleted_kind, copy.deepcopy(obj))
        found = kind or RESOURCES[(key[0], key[1])]
        return status_body(200, "", "", _details(found, key[3])) | {"status": "Success"}

    def _access_review(self, user: User, review: dict[str, Any]) -> dict[str, Any]:
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        info = Info(
            verb=attributes.get("verb", ""),
            group=attributes.get("group", ""),
            version=attributes.get("version", ""),
            resource=attributes.get("resource", ""),
            subresource=attributes.get("subresource", ""),
            namespace=attributes.get("namespace", ""),
            name=attributes.get("name", ""),
        )
        allowed = self.allowed(user, info)
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {},
            "spec": review.get("spec") or {},
            "status": {"allowed": allowed, **({} if allowed else {"reason": ""})},
        }

    def _pod_log(self, namespace: str, name: str, query: dict[str, list[str]]) -> Answer:
        if ("", "pods", namespace, name) not in self.objects:
            raise not_found(RESOURCES[("", "pods")], name)
        container = query.get("container", [""])[0]
        text = self.logs.get((namespace, name, container))
        if not text:
            return 204, None
        tail = query.get("tailLines", [""])[0]
        lines = text.splitlines(keepends=True)
        return 200, "".join(lines[-int(tail) :] if tail else lines)

    def _node_proxy(self, node: str, path: str) -> Answer:
        if ("", "nodes", "", node) not in self.objects:
            raise not_found(RESOURCES[("", "nodes")], node)
        if not path.endswith("/proxy/stats/summary") or node not in self.node_stats:
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp")
        return 200, self.node_stats[node]

    def _token_request(self, info: Info, request: dict[str, Any]) -> dict[str, Any]:
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        account = self.objects.get(("", "serviceaccounts", info.namespace, info.name))
        if account is None:
            raise not_found(RESOURCES[("", "serviceaccounts")], info.name)
        seconds = int((request.get("spec") or {}).get("expirationSeconds") or 3600)
        expires = now() + dt.timedelta(seconds=seconds)
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
            "status": {"token": token, "expirationTimestamp": timestamp(expires)},
        }

    # --- bookkeeping ------------------------------------------------------------------------

    @staticmethod
    def _generation(previous: dict[str, Any] | None, obj: dict[str, Any]) -> int:
        if previous is None:
            return 1
        old = int(previous.get("metadata", {}).get("generation") or 1)
        return old + 1 if _spec_of(previous) != _spec_of(obj) else old

    def _stamp(self, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        old = (previous or {}).get("metadata", {})
        meta["uid"] = old.get("uid") or meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (
            old.get("creationTimestamp") or meta.get("creationTimestamp") or timestamp(now())
        )
        meta["resourceVersion"] = str(self._version)
        meta["generation"] = (
            self._generation(previous, obj) if previous else (int(meta.get("generation") or 1))
        )

    @staticmethod
    def _store_secret_data(obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Secret" or "stringData" not in obj:
            return
        data = dict(obj.get("data") or {})
        for key, value in (obj.pop("stringData") or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def digest_of(text: str) -> str:
    """A stable sha256 digest for TEXT (image IDs the Kubelet reports)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


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


def encode(answer: Any) -> tuple[bytes, str]:
    """The body and content type of an answer (JSON, text, or nothing)."""
    if answer is None:
        return b"", "application/json"
    if isinstance(answer, str):
        return answer.encode(), "text/plain"
    return json.dumps(answer).encode(), "application/json"


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
        data, content_type = encode(answer)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer
