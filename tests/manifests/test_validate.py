"""Schema validation: core kinds strictly against the pinned k3s version, Traefik CRDs by shape."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest

from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.settings import REPO_ROOT

TRAEFIK_API = "traefik.io/v1alpha1"
MIDDLEWARES_ANNOTATION = "traefik.ingress.kubernetes.io/router.middlewares"
MIDDLEWARE_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "buffering": {
        "maxRequestBodyBytes": int,
        "memRequestBodyBytes": int,
        "maxResponseBodyBytes": int,
        "memResponseBodyBytes": int,
        "retryExpression": str,
    },
    "basicAuth": {
        "secret": str,
        "realm": str,
        "removeHeader": bool,
        "headerField": str,
    },
    # Traefik v3 (k3s's bundled chart): rate and concurrency limits, headers, redirect, allow-list.
    "rateLimit": {"average": int, "period": (str, int), "burst": int, "sourceCriterion": dict},
    "inFlightReq": {"amount": int, "sourceCriterion": dict},
    "headers": {"stsSeconds": int, "stsIncludeSubdomains": bool, "stsPreload": bool},
    "redirectScheme": {"scheme": str, "permanent": bool, "port": str},
    "ipAllowList": {"sourceRange": list, "ipStrategy": dict},
}
# In every environment (k8s/base/middlewares.yaml); k8s/components add others as configured.
BASE_MIDDLEWARES = {"upload-limit", "flower-auth", "rate-limit", "in-flight"}


def k3s_kubernetes_version() -> str:
    """Kubernetes version of the k3s release pinned in k3s.lock, e.g. "1.36.4"."""
    lock = tomllib.loads((REPO_ROOT / "k3s.lock").read_text())
    match = re.fullmatch(r"v(\d+\.\d+\.\d+)\+k3s\d+", lock["k3s"]["version"])
    assert match, f"unexpected k3s version {lock['k3s']['version']!r} in k3s.lock"
    return match[1]


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def validate_strict(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, k3s_kubernetes_version(), strict=True)


def core_docs(rendered: Rendered) -> list[dict[str, Any]]:
    return [doc for doc in rendered.docs if doc["apiVersion"] != TRAEFIK_API]


def test_schemas_for_the_pinned_k3s_version_are_shipped() -> None:
    """Validation must use the pinned minor's own schemas, not a fallback to an older one."""
    wanted = major_minor(k3s_kubernetes_version())
    shipped = {major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    assert wanted in shipped, f"kubernetes-validate has no {wanted} schemas; upgrade it"


def test_core_kinds_validate_strictly(rendered: Rendered) -> None:
    failures = []
    for doc in core_docs(rendered):
        try:
            validate_strict(doc)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_rejects_an_unknown_field(rendered: Rendered) -> None:
    deployment = copy.deepcopy(rendered.find("Deployment", "api"))
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True  # typo on purpose
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(deployment)


def test_only_expected_kinds_are_rendered(rendered: Rendered) -> None:
    unexpected = {
        (doc["apiVersion"], doc["kind"])
        for doc in rendered.docs
        if doc["apiVersion"] == TRAEFIK_API and doc["kind"] != "Middleware"
    }
    assert not unexpected


def test_traefik_middlewares_have_a_known_shape(rendered: Rendered) -> None:
    middlewares = rendered.of_kind("Middleware")
    assert {m["metadata"]["name"] for m in middlewares} >= BASE_MIDDLEWARES
    for middleware in middlewares:
        assert middleware["apiVersion"] == TRAEFIK_API
        assert set(middleware) == {"apiVersion", "kind", "metadata", "spec"}
        (kind, config), *rest = middleware["spec"].items()
        assert not rest, "one middleware type per object"
        allowed = MIDDLEWARE_FIELDS[kind]
        assert config and set(config) <= set(allowed), f"unknown fields in {kind}"
        for key, value in config.items():
            assert isinstance(value, allowed[key]), f"{kind}.{key} has type {type(value)}"


def test_ingress_middleware_references_resolve(rendered: Rendered) -> None:
    middlewares = {m["metadata"]["name"] for m in rendered.of_kind("Middleware")}
    for ingress in rendered.of_kind("Ingress"):
        refs = ingress["metadata"]["annotations"][
            "traefik.ingress.kubernetes.io/router.middlewares"
        ]
        for ref in refs.split(","):
            assert ref.startswith(f"{rendered.namespace}-"), ref
            name = ref.removeprefix(f"{rendered.namespace}-").removesuffix("@kubernetescrd")
            assert ref.endswith("@kubernetescrd") and name in middlewares, ref
