"""The verify Job of a release (k8s/base/verify.yaml): what it runs, reaches and reads.

Pod Security, resources, labels, image pull policy and validation are checked for every
workload, verify included, in test_policy.py and test_validate.py; its name, pull secret and
that deploy does not apply it in test_render.py and test_apply.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.render import Rendered

from .kube_objects import pod_spec, pod_template, render_env, secret_files, settings, workloads
from .netpol import Pod, allowed, selector_matches

TRAEFIK = Pod(names.INGRESS_CONTROLLER_NAMESPACE, dict(names.INGRESS_CONTROLLER_LABELS))
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod("default", {"app": "anything"})
API_AUTH_PASSWORD = (names.ApiAuthSecret.NAME, names.ApiAuthSecret.PASSWORD)


def verify_job(rendered: Rendered) -> dict[str, Any]:
    return rendered.find("Job", rendered.verify_job)


def verify_container(rendered: Rendered) -> dict[str, Any]:
    (container,) = pod_spec(verify_job(rendered))["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment; every variable of verify is a plain value."""
    return {var["name"]: var["value"] for var in container.get("env", [])}


def component_pods(rendered: Rendered) -> dict[str, Pod]:
    return {
        pod_template(w)["metadata"]["labels"][names.COMPONENT_LABEL]: Pod(
            rendered.namespace, pod_template(w)["metadata"]["labels"]
        )
        for w in workloads(rendered.docs)
    }


def container_ports(rendered: Rendered) -> dict[str, list[int]]:
    """Component -> the ports its pods listen on."""
    return {
        pod_template(w)["metadata"]["labels"][names.COMPONENT_LABEL]: [
            p["containerPort"] for c in pod_spec(w)["containers"] for p in c.get("ports", [])
        ]
        for w in workloads(rendered.docs)
    }


# --- What it runs ----------------------------------------------------------------------------


def test_verify_runs_the_release_image_against_the_api_service(rendered: Rendered) -> None:
    job = verify_job(rendered)
    spec, container = pod_spec(job), verify_container(rendered)
    assert container["image"] == rendered.image and container["args"] == ["verify"]
    assert not spec.get("initContainers")
    for labels in (job["metadata"]["labels"], pod_template(job)["metadata"]["labels"]):
        assert labels[names.NAME_LABEL] == names.APP_NAME
        assert labels[names.COMPONENT_LABEL] == names.VERIFY
    service = rendered.find("Service", names.SERVICES[names.API])
    (port,) = service["spec"]["ports"]
    host = service["metadata"]["name"]
    url = f"http://{host}" if port["port"] == 80 else f"http://{host}:{port['port']}"
    assert env_of(container)["VERIFY_API_URL"] == url == "http://api"
    # The Service sends it to the api pods' http port, the one the NetworkPolicies open.
    (api,) = pod_spec(rendered.find("Deployment", names.API))["containers"]
    (http,) = [p for p in api["ports"] if p["name"] == port["targetPort"]]
    assert http["containerPort"] == 8000
    # No app config: verify talks HTTP to the API only (no database or broker settings).
    assert "envFrom" not in container


def test_verify_runs_once_and_within_a_bound(rendered: Rendered) -> None:
    spec = verify_job(rendered)["spec"]
    assert spec["backoffLimit"] == 0  # a failed check is the answer, not something to retry
    assert pod_spec(verify_job(rendered))["restartPolicy"] == "Never"
    timeout = int(env_of(verify_container(rendered))["VERIFY_TIMEOUT_SECONDS"])
    assert timeout < spec["activeDeadlineSeconds"] <= 600
    migrate = rendered.find("Job", rendered.migrate_job)["spec"]
    assert spec["ttlSecondsAfterFinished"] == migrate["ttlSecondsAfterFinished"]


def test_verify_mounts_no_database_or_broker_secret(rendered: Rendered) -> None:
    spec, container = pod_spec(verify_job(rendered)), verify_container(rendered)
    assert set(secret_files(spec, container).values()) <= {API_AUTH_PASSWORD}
    projected = [
        source["secret"]["name"]
        for volume in spec.get("volumes", [])
        for source in volume.get("projected", {}).get("sources", [])
        if "secret" in source
    ]
    plain = [v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v]
    assert set(projected + plain) <= {names.ApiAuthSecret.NAME}
    assert not {"POSTGRES_PASSWORD_FILE", "RABBITMQ_DEFAULT_PASSWORD_FILE"} & set(env_of(container))


# --- Basic auth of a restricted API ------------------------------------------------------------


def test_verify_has_the_auth_user_and_password_file_exactly_when_the_api_is_restricted(
    rendered: Rendered,
) -> None:
    toolkit = settings(rendered.env).toolkit
    spec, container = pod_spec(verify_job(rendered)), verify_container(rendered)
    env, files = env_of(container), secret_files(spec, container)
    if toolkit.API_ACCESS == "restricted":
        assert env["VERIFY_AUTH_USER"] == toolkit.API_AUTH_USER
        assert files[env["VERIFY_AUTH_PASSWORD_FILE"]] == API_AUTH_PASSWORD
    else:
        assert not {"VERIFY_AUTH_USER", "VERIFY_AUTH_PASSWORD_FILE"} & set(env)
        assert not files


@pytest.mark.parametrize("env", ["stage", "prod"])
def test_restricted_access_mounts_the_api_auth_password_for_the_configured_user(env: str) -> None:
    restricted = render_env(env, flags={"API_ACCESS": "restricted", "API_AUTH_USER": "alice"})
    public = render_env(env, flags={"API_ACCESS": "public"})
    spec, container = pod_spec(verify_job(restricted)), verify_container(restricted)
    values = env_of(container)
    assert values["VERIFY_AUTH_USER"] == "alice"  # from the settings, not the placeholder
    path = values["VERIFY_AUTH_PASSWORD_FILE"]
    assert path.startswith(names.SECRET_MOUNT_ROOT + "/")
    # Only the plain password (not the htpasswd line), read-only, as a file.
    assert secret_files(spec, container) == {path: API_AUTH_PASSWORD}
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert [m.get("readOnly") for m in mounts] == [True]
    assert "API_AUTH_USER" not in str(container["env"])
    public_container = verify_container(public)
    assert not {"VERIFY_AUTH_USER", "VERIFY_AUTH_PASSWORD_FILE"} & set(env_of(public_container))
    assert not secret_files(pod_spec(verify_job(public)), public_container)
    assert restricted.verify_job != public.verify_job  # a different template: a different Job


# --- Network -----------------------------------------------------------------------------------


def test_verify_reaches_the_api_and_nothing_else(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods, ports = component_pods(rendered), container_ports(rendered)
    verify = pods[names.VERIFY]
    reachable = {
        (dst, port)
        for dst, dst_ports in ports.items()
        for port in {*dst_ports, 80, 443, 5432, 5672, 5555, 8000}
        if dst != names.VERIFY and allowed(policies, verify, pods[dst], port)
    }
    assert reachable == {(names.API, 8000)}
    for server, port in ((names.POSTGRES, 5432), (names.RABBITMQ, 5672), (names.FLOWER, 5555)):
        assert not allowed(policies, verify, pods[server], port), server
    for outside in (TRAEFIK, STRANGER):
        assert not any(allowed(policies, verify, outside, port) for port in (80, 443, 8000))
    assert allowed(policies, verify, KUBE_DNS, 53, "UDP")
    assert allowed(policies, verify, KUBE_DNS, 53)
    # Nothing may connect to a verify pod.
    for src in [*pods.values(), TRAEFIK, STRANGER]:
        assert not allowed(policies, src, verify, 8000)


def test_default_deny_covers_verify_and_each_side_is_needed(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods = component_pods(rendered)
    verify, api = pods[names.VERIFY], pods[names.API]
    deny = rendered.find("NetworkPolicy", "default-deny")["spec"]
    assert selector_matches(deny["podSelector"], verify.labels)
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    # Without its own policy verify's egress is denied by default-deny ...
    without_egress = [p for p in policies if p["metadata"]["name"] != names.VERIFY]
    assert not allowed(without_egress, verify, api, 8000)
    # ... and without the api's ingress rule for it the api pods refuse it.
    api_policy = rendered.find("NetworkPolicy", names.API)

    def admits_verify(rule: dict[str, Any]) -> bool:  # a same-namespace pod peer matching verify
        return any(
            "namespaceSelector" not in peer
            and "podSelector" in peer
            and selector_matches(peer["podSelector"], verify.labels)
            for peer in rule["from"]
        )

    rules = api_policy["spec"]["ingress"]
    assert [admits_verify(rule) for rule in rules].count(True) == 1
    narrowed = {
        **api_policy,
        "spec": {**api_policy["spec"], "ingress": [r for r in rules if not admits_verify(r)]},
    }
    without_ingress = [narrowed if p is api_policy else p for p in policies]
    assert not allowed(without_ingress, verify, api, 8000)
    assert allowed(policies, verify, api, 8000)
