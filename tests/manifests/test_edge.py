"""The edge in the rendered overlays (issue 14): HTTPS-only routing, redirect, HSTS, the
per-client limits on exactly the upload and task-creation routes, stage's restriction, the
TLS modes, and the retention CronJob.

Routing is checked the way Traefik decides it: every Ingress path is a router whose rule is
`Host(...) && Path(...)` (Exact) or `Host(...) && PathPrefix(...)` (Prefix) and whose default
priority is the rule's length, so the longest matching rule wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke import Exit

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests import edge
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.settings import REPO_ROOT

from .kube_objects import backend_constant, env_values, pod_spec, render_env, settings

ROUTER = "traefik.ingress.kubernetes.io/router."
LIMITED = {"/api/v1/datasets", "/api/v1/tasks"}  # POST: upload, task creation
# A server with public DNS names: TLS_MODE=auto picks acme (the env files ship .localhost).
PUBLIC = {
    "API_HOST": "api.example.org",
    "FLOWER_INGRESS_HOST": "flower.example.org",
    "ACME_EMAIL": "ops@example.org",
}


@dataclass(frozen=True)
class Router:
    """One Traefik router made from an Ingress path."""

    ingress: str
    host: str
    path: str
    exact: bool
    entrypoint: str
    tls: bool
    resolver: str
    middlewares: tuple[str, ...]

    @property
    def rule(self) -> str:
        matcher = "Path" if self.exact else "PathPrefix"
        return f"Host(`{self.host}`) && {matcher}(`{self.path}`)"

    def matches(self, host: str, path: str) -> bool:
        if host != self.host:
            return False
        return path == self.path if self.exact else path.startswith(self.path)


def routers(rendered: Rendered) -> list[Router]:
    result = []
    for ingress in rendered.of_kind("Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        refs = annotations.get(f"{ROUTER}middlewares", "")
        chain = tuple(
            ref.removeprefix(f"{rendered.namespace}-").removesuffix("@kubernetescrd")
            for ref in refs.split(",")
            if ref
        )
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                result.append(
                    Router(
                        ingress["metadata"]["name"],
                        rule["host"],
                        path["path"],
                        path["pathType"] == "Exact",
                        annotations[f"{ROUTER}entrypoints"],
                        annotations.get(f"{ROUTER}tls") == "true",
                        annotations.get(f"{ROUTER}tls.certresolver", ""),
                        chain,
                    )
                )
    return result


def route(rendered: Rendered, entrypoint: str, host: str, path: str) -> Router:
    """The router Traefik picks for a request: the longest matching rule wins."""
    candidates = [
        r for r in routers(rendered) if r.entrypoint == entrypoint and r.matches(host, path)
    ]
    assert candidates, f"no router for {entrypoint} {host}{path}"
    best = max(candidates, key=lambda r: len(r.rule))
    assert [len(r.rule) for r in candidates].count(len(best.rule)) == 1, "ambiguous priority"
    return best


def middleware(rendered: Rendered, name: str) -> dict[str, Any]:
    return rendered.find("Middleware", name)["spec"]


def hosts_of(rendered: Rendered) -> tuple[str, str]:
    toolkit = settings(rendered.env).toolkit
    return toolkit.API_HOST, toolkit.FLOWER_INGRESS_HOST


API_PATHS = [
    "/api/v1/datasets",
    "/api/v1/tasks",
    "/api/v1/tasks/0b5e9a52-5d2c-4fb4-9d6e-2f1c7f1a0c11",
    "/api/v1/datasets/0b5e9a52-5d2c-4fb4-9d6e-2f1c7f1a0c11",
    "/api/v1/tasks/primitives",
    "/health/ready",
    "/docs",
]


@pytest.fixture(scope="module")
def variants() -> dict[str, Rendered]:
    """Stage rendered with flags: each TLS mode, an allow-list, and a public stage."""
    return {
        "off": render_env("stage", flags={"TLS_MODE": "off"}),
        "selfsigned": render_env("stage", flags={"TLS_MODE": "selfsigned"}),
        "acme": render_env("stage", flags={**PUBLIC, "TLS_MODE": "acme"}),
        "auto-public": render_env("stage", flags=PUBLIC),
        "mixed": render_env("stage", flags={**PUBLIC, "FLOWER_INGRESS_HOST": "flower.localhost"}),
        "allowlist": render_env(
            "stage", flags={"API_ALLOWED_IPS": "203.0.113.7, 10.0.0.0/8,2001:db8::/32"}
        ),
        "public": render_env("stage", flags={"API_ACCESS": "public"}),
        "values": render_env(
            "stage",
            flags={
                "EDGE_RATE_AVERAGE": "7",
                "EDGE_RATE_PERIOD": "30s",
                "EDGE_RATE_BURST": "3",
                "EDGE_INFLIGHT": "1",
                "HSTS_SECONDS": "600",
                "MAX_UPLOAD_SIZE_BYTES": "1048576",
            },
        ),
    }


# --- HTTPS only ----------------------------------------------------------------------------


def test_every_https_router_has_tls_and_every_http_router_only_redirects(
    rendered: Rendered,
) -> None:
    """The shipped .localhost hosts: TLS_MODE=auto serves Traefik's self-signed certificate."""
    for router in routers(rendered):
        if router.entrypoint == edge.WEBSECURE:
            assert router.tls and not router.resolver, router
        else:
            assert router.entrypoint == edge.WEB, router
            assert router.middlewares == (edge.REDIRECT,), router
            assert not router.tls


def test_each_host_and_path_redirects_on_http_and_is_served_on_https(rendered: Rendered) -> None:
    api_host, flower_host = hosts_of(rendered)
    for host, path in [*((api_host, p) for p in API_PATHS), (flower_host, "/")]:
        assert route(rendered, edge.WEB, host, path).middlewares == (edge.REDIRECT,)
        served = route(rendered, edge.WEBSECURE, host, path)
        assert served.tls and edge.REDIRECT not in served.middlewares


def test_the_redirect_is_permanent_to_https(rendered: Rendered) -> None:
    assert middleware(rendered, edge.REDIRECT) == {
        "redirectScheme": {"scheme": "https", "permanent": True}
    }


def test_hsts_comes_first_on_every_https_router(rendered: Rendered) -> None:
    expected = settings(rendered.env).toolkit.HSTS_SECONDS
    assert middleware(rendered, edge.HSTS)["headers"]["stsSeconds"] == expected
    for router in routers(rendered):
        if router.entrypoint == edge.WEBSECURE:
            assert router.middlewares[0] == edge.HSTS, router  # also on 401/403/429 answers


# --- Limits on uploads and task creation only ----------------------------------------------


def test_rate_and_in_flight_limits_are_on_exactly_upload_and_task_creation(
    rendered: Rendered,
) -> None:
    api_host, flower_host = hosts_of(rendered)
    for entrypoint in (edge.WEB, edge.WEBSECURE):
        limited = {
            (r.host, r.path)
            for r in routers(rendered)
            if r.entrypoint == entrypoint and edge.RATE_LIMIT in r.middlewares
        }
        assert limited == (
            {(api_host, p) for p in LIMITED} if entrypoint == edge.WEBSECURE else set()
        )
    for path in API_PATHS:
        chain = route(rendered, edge.WEBSECURE, api_host, path).middlewares
        if path in LIMITED:
            # Limits before the buffering: a client over its limit uploads nothing more.
            assert chain[-3:] == (edge.RATE_LIMIT, edge.IN_FLIGHT, edge.UPLOAD_LIMIT), path
        else:
            assert edge.RATE_LIMIT not in chain and edge.IN_FLIGHT not in chain, path
    assert edge.RATE_LIMIT not in route(rendered, edge.WEBSECURE, flower_host, "/").middlewares


def test_limit_values_come_from_the_settings(rendered: Rendered) -> None:
    toolkit = settings(rendered.env).toolkit
    rate = middleware(rendered, edge.RATE_LIMIT)["rateLimit"]
    assert (rate["average"], rate["period"], rate["burst"]) == (
        toolkit.EDGE_RATE_AVERAGE,
        toolkit.EDGE_RATE_PERIOD,
        toolkit.EDGE_RATE_BURST,
    )
    assert middleware(rendered, edge.IN_FLIGHT)["inFlightReq"]["amount"] == toolkit.EDGE_INFLIGHT


def test_limits_count_per_client_address(rendered: Rendered) -> None:
    """Both key on the connection's address: not on the Host header (inFlightReq's default,
    one counter for everybody) nor on X-Forwarded-For (a client could forge it)."""
    for name, kind in ((edge.RATE_LIMIT, "rateLimit"), (edge.IN_FLIGHT, "inFlightReq")):
        criterion = middleware(rendered, name)[kind]["sourceCriterion"]
        assert criterion == {"ipStrategy": {"depth": 0}}, name


def test_overrides_reach_the_middlewares(variants: dict[str, Rendered]) -> None:
    rendered = variants["values"]
    rate = middleware(rendered, edge.RATE_LIMIT)["rateLimit"]
    assert (rate["average"], rate["period"], rate["burst"]) == (7, "30s", 3)
    assert middleware(rendered, edge.IN_FLIGHT)["inFlightReq"]["amount"] == 1
    assert middleware(rendered, edge.HSTS)["headers"]["stsSeconds"] == 600
    envelope = backend_constant("datasets/upload.py", "ENVELOPE_ALLOWANCE")
    body = middleware(rendered, edge.UPLOAD_LIMIT)["buffering"]["maxRequestBodyBytes"]
    assert body == 1048576 + envelope


# --- Stage restricted, prod public -----------------------------------------------------------


def test_stage_api_needs_credentials_and_prod_api_is_public(
    all_rendered: dict[str, Rendered],
) -> None:
    stage, prod = all_rendered["stage"], all_rendered["prod"]
    stage_api, _ = hosts_of(stage)
    for path in API_PATHS:
        chain = route(stage, edge.WEBSECURE, stage_api, path).middlewares
        assert edge.API_AUTH in chain, path
        assert chain.index(edge.API_AUTH) < chain.index(edge.UPLOAD_LIMIT)
    auth = middleware(stage, edge.API_AUTH)["basicAuth"]
    assert auth["secret"] == names.ApiAuthSecret.NAME
    assert auth["removeHeader"] is True  # the API never sees the credentials
    _, stage_flower = hosts_of(stage)
    assert edge.API_AUTH not in route(stage, edge.WEBSECURE, stage_flower, "/").middlewares
    for name in (edge.API_AUTH, edge.API_ALLOWLIST):
        assert not [m for m in prod.of_kind("Middleware") if m["metadata"]["name"] == name]
        assert not [r for r in routers(prod) if name in r.middlewares]
    assert not [m for m in stage.of_kind("Middleware") if m["metadata"]["name"] == "api-allowlist"]


def test_the_allow_list_appears_only_where_configured(variants: dict[str, Rendered]) -> None:
    rendered = variants["allowlist"]
    assert middleware(rendered, edge.API_ALLOWLIST)["ipAllowList"]["sourceRange"] == [
        "203.0.113.7/32",
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
    api_host, _ = hosts_of(rendered)
    for path in API_PATHS:
        chain = route(rendered, edge.WEBSECURE, api_host, path).middlewares
        assert chain[1:3] == (edge.API_ALLOWLIST, edge.API_AUTH), path  # after hsts
    public = variants["public"]
    assert not [
        r for r in routers(public) if {edge.API_AUTH, edge.API_ALLOWLIST} & set(r.middlewares)
    ]


def test_an_unusable_allow_list_entry_is_one_clear_error() -> None:
    with pytest.raises(Exit, match=r"API_ALLOWED_IPS=.*'10\.0\.0\.300' is not an IP address"):
        settings("stage", {"API_ALLOWED_IPS": "10.0.0.1,10.0.0.300"})


# --- TLS modes --------------------------------------------------------------------------------


def test_tls_off_renders_plain_http(variants: dict[str, Rendered]) -> None:
    rendered = variants["off"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered.docs}
    assert not kinds & set(edge.COMPONENTS["https"])  # no redirect, no HSTS
    for router in routers(rendered):
        assert router.entrypoint == edge.WEB and not router.tls and not router.resolver
        assert edge.REDIRECT not in router.middlewares and edge.HSTS not in router.middlewares
    api_host, _ = hosts_of(rendered)
    chain = route(rendered, edge.WEB, api_host, "/api/v1/datasets").middlewares
    assert chain == (edge.API_AUTH, edge.RATE_LIMIT, edge.IN_FLIGHT, edge.UPLOAD_LIMIT)
    assert settings("stage", {"TLS_MODE": "off"}).toolkit.API_BASE_URL.startswith("http://")


def test_selfsigned_uses_traefiks_certificate_with_the_same_routing(
    variants: dict[str, Rendered], all_rendered: dict[str, Rendered]
) -> None:
    rendered = variants["selfsigned"]
    for router in routers(rendered):
        assert not router.resolver
        assert router.tls == (router.entrypoint == edge.WEBSECURE)

    def shape(r: Rendered) -> set[tuple[str, str, str, tuple[str, ...]]]:
        return {(x.ingress, x.path, x.entrypoint, x.middlewares) for x in routers(r)}

    assert shape(rendered) == shape(all_rendered["stage"])


def test_public_hosts_get_lets_encrypt_with_the_same_routing(
    variants: dict[str, Rendered], all_rendered: dict[str, Rendered]
) -> None:
    """TLS_MODE=auto with public names renders exactly what TLS_MODE=acme renders: the resolver
    on every HTTPS router, the routing of the self-signed default unchanged."""
    for name in ("acme", "auto-public"):
        rendered = variants[name]
        for router in routers(rendered):
            assert router.resolver == (edge.RESOLVER if router.entrypoint == edge.WEBSECURE else "")
            assert router.tls == (router.entrypoint == edge.WEBSECURE)
        assert {r.host for r in routers(rendered)} == {"api.example.org", "flower.example.org"}
    assert variants["acme"].docs == variants["auto-public"].docs

    def shape(r: Rendered) -> set[tuple[str, str, str, tuple[str, ...]]]:
        return {(x.ingress, x.path, x.entrypoint, x.middlewares) for x in routers(r)}

    assert shape(variants["acme"]) == shape(all_rendered["stage"])


def test_mixed_hosts_get_the_self_signed_certificate_everywhere(
    variants: dict[str, Rendered],
) -> None:
    """One public and one .localhost host: auto does not ask Let's Encrypt for any of them."""
    for router in routers(variants["mixed"]):
        assert not router.resolver and router.tls == (router.entrypoint == edge.WEBSECURE)
    choice = edge.tls_choice(
        settings("stage", {**PUBLIC, "FLOWER_INGRESS_HOST": "flower.localhost"})
    )
    assert choice.mode == "selfsigned" and "only api.example.org is" in choice.why


def test_acme_without_an_email_is_refused() -> None:
    with pytest.raises(Exit, match="TLS_MODE=acme needs ACME_EMAIL"):
        render_env("prod", flags={"ACME_EMAIL": "", "TLS_MODE": "acme"})
    with pytest.raises(Exit, match="TLS_MODE=auto picked ACME"):
        render_env("prod", flags={**PUBLIC, "ACME_EMAIL": ""})
    render_env("prod", flags={"ACME_EMAIL": ""})  # .localhost: self-signed, no e-mail needed


# --- Objects --------------------------------------------------------------------------------


def test_component_objects_are_what_prune_knows(variants: dict[str, Rendered]) -> None:
    """edge.COMPONENTS lists exactly the objects of k8s/components/<name>, and they carry the
    instance label: deploy's label-scoped prune removes them when a component is dropped (a
    redirect Ingress left from TLS_MODE=acme would shadow the plain-HTTP routes of `off`)."""
    for name, objects in edge.COMPONENTS.items():
        directory = REPO_ROOT / "k8s" / "components" / name
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        found = {
            (doc["kind"], doc["metadata"]["name"])
            for resource in kustomization["resources"]
            for doc in yaml.safe_load_all((directory / resource).read_text())
        }
        assert found == set(objects), name
    rendered = variants["allowlist"]
    for component in edge.components(settings("stage", {"API_ALLOWED_IPS": "10.0.0.0/8"})):
        for kind, name in edge.COMPONENTS[component]:
            labels = rendered.find(kind, name)["metadata"]["labels"]
            assert labels[names.INSTANCE_LABEL] == rendered.namespace
            assert labels[names.PART_OF_LABEL] == names.APP_NAME


# --- Retention ------------------------------------------------------------------------------


def test_retention_runs_daily_like_the_worker(rendered: Rendered) -> None:
    cron = rendered.find("CronJob", names.RETENTION)
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["schedule"].split()[2:] == ["*"] * 3
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] <= 3 and spec["failedJobsHistoryLimit"] <= 3
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] <= 3600 and job["backoffLimit"] <= 3
    pod, worker = pod_spec(cron), pod_spec(rendered.find("Deployment", names.WORKER))
    (container,), (worker_container,) = pod["containers"], worker["containers"]
    assert container["args"] == ["retention"]
    assert container["image"] == worker_container["image"] == rendered.image
    assert pod["securityContext"] == worker["securityContext"]
    for key in ("envFrom", "env", "securityContext", "volumeMounts"):
        assert container[key] == worker_container[key], key
    volumes = {v["name"]: v for v in pod["volumes"]}
    worker_volumes = {v["name"]: v for v in worker["volumes"]}
    assert volumes["uploads"] == worker_volumes["uploads"]
    assert volumes["secrets"] == worker_volumes["secrets"]


@pytest.mark.parametrize(("env", "days"), [("stage", 14), ("prod", 90)])
def test_retention_days_per_environment(env: str, days: int) -> None:
    assert int(env_values(env)["RETENTION_DAYS"]) == days


def test_upload_quota_stays_below_the_uploads_volume(rendered: Rendered) -> None:
    """UPLOAD_QUOTA_BYTES (backend, 507 before the disk is full) must be set per environment
    and leave room on the uploads volume for files being written and the database's margin."""
    cfg = settings(rendered.env)
    quota = int(cfg.backend.UPLOAD_QUOTA_BYTES)
    size = rendered.find("PersistentVolumeClaim", names.UPLOADS_PVC)["spec"]["resources"]
    volume = _bytes(size["requests"]["storage"])
    assert 0 < quota <= volume - 2 * cfg.backend.MAX_UPLOAD_SIZE_BYTES


def _bytes(quantity: str) -> int:
    units = {"Mi": 1024**2, "Gi": 1024**3}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_readme_documents_dns_certificates_and_limits() -> None:
    text = Path(REPO_ROOT / "README.md").read_text()
    section = text.split("## Deploy to a server", 1)[1].split("\n## ", 1)[0]
    for needle in ("TLS_MODE", "ACME_EMAIL", "DNS", "80", "443", "EDGE_RATE_AVERAGE", "429"):
        assert needle in section, needle
