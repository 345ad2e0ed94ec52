"""Policies on the rendered manifests of both overlays (what issue 5 asks of every object)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.render import Rendered
from desbordante_ops.core.settings import REPO_ROOT

from .kube_objects import (
    DEPLOY_JOBS,
    JOB_KINDS,
    LONG_RUNNING_KINDS,
    MIB,
    backend_constant,
    budget_memory_requests,
    containers,
    env_values,
    overlay_memory_requests,
    pod_spec,
    pod_template,
    quantity_bytes,
    render_env,
    secret_files,
    settings,
    workloads,
)
from .netpol import Pod, allowed, egress_allows, ingress_allows

MEMORY_BUDGET_BYTES = 1280 * MIB  # 1.25 GiB for stage + prod requests together
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BACKEND_COMPONENTS = (names.API, names.WORKER, names.FLOWER, names.MIGRATE, names.RETENTION)
# Every component label a rendered pod may carry: the verify Job's is not among names.COMPONENTS
# (the services of `invoke logs`).
POD_COMPONENTS = (*names.COMPONENTS, names.VERIFY)


def all_containers(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload "Kind/name", pod spec, container) for every container, init ones included."""
    return [
        (f"{w['kind']}/{w['metadata']['name']}", pod_spec(w), c)
        for w in workloads(rendered.docs)
        for c in containers(pod_spec(w))
    ]


def long_running(rendered: Rendered) -> list[dict[str, Any]]:
    return [w for w in workloads(rendered.docs) if w["kind"] in LONG_RUNNING_KINDS]


def component_of(workload: dict[str, Any]) -> str:
    return pod_template(workload)["metadata"]["labels"][names.COMPONENT_LABEL]


def prestop_seconds(container: dict[str, Any]) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    return int(pre_stop.get("sleep", {}).get("seconds", 0))


# --- Every workload ---------------------------------------------------------------------------


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered: Rendered) -> None:
    for where, _, c in all_containers(rendered):
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}/{c['name']}"
        memory = resources["requests"]["memory"], resources["limits"]["memory"]
        assert quantity_bytes(memory[0]) <= quantity_bytes(memory[1]), f"{where}/{c['name']}"


def test_long_running_containers_have_startup_readiness_and_liveness_probes(
    rendered: Rendered,
) -> None:
    for workload in long_running(rendered):
        for c in pod_spec(workload)["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{workload['metadata']['name']}/{c['name']} lacks {probe}"


def test_pods_meet_pod_security_standard_restricted(rendered: Rendered) -> None:
    for workload in workloads(rendered.docs):
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod_sc.get("runAsUser", 0) != 0 and pod_sc.get("runAsGroup", 0) != 0, where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), where
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume['name']}"
        for c in containers(spec):
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            assert not sc.get("capabilities", {}).get("add"), f"{where}/{c['name']}"
            assert not sc.get("privileged"), f"{where}/{c['name']}"
            assert sc.get("runAsUser", 1) != 0, f"{where}/{c['name']}"
            assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] in (
                "RuntimeDefault",
                "Localhost",
            )
            assert all("hostPort" not in p for p in c.get("ports", [])), f"{where}/{c['name']}"


def test_root_filesystems_are_read_only_with_emptydir_for_tmp(rendered: Rendered) -> None:
    for where, spec, c in all_containers(rendered):
        assert c["securityContext"].get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if c["image"] != names.RABBITMQ_IMAGE or c["name"] != "config":  # init: writes conf.d
            assert tmp and tmp[0]["name"] in empty_dirs, f"{where}/{c['name']} needs /tmp"


def test_workloads_run_as_their_images_numeric_users(rendered: Rendered) -> None:
    expected = {names.POSTGRES: 999, names.RABBITMQ: 999}
    for workload in workloads(rendered.docs):
        uid = expected.get(component_of(workload), names.BACKEND_UID)
        sc = pod_spec(workload)["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, uid, uid)


def test_no_service_account_token_and_no_service_link_variables(rendered: Rendered) -> None:
    for workload in workloads(rendered.docs):
        spec = pod_spec(workload)
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        # Service links would inject POSTGRES_PORT=tcp://... over the app's own variable.
        assert spec.get("enableServiceLinks") is False, workload["metadata"]["name"]


def test_images_are_pinned_and_pulled_if_not_present(rendered: Rendered) -> None:
    for where, _, c in all_containers(rendered):
        image = c["image"]
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), f"{where}: {image}"
        assert c.get("imagePullPolicy") == "IfNotPresent", f"{where}/{c['name']}"
    third_party = {c["image"] for _, _, c in all_containers(rendered)} - {rendered.image}
    assert third_party == {names.POSTGRES_IMAGE, names.RABBITMQ_IMAGE}


def test_nothing_in_k8s_uses_latest_tags() -> None:
    for path in (REPO_ROOT / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            text = yaml.safe_dump(doc)
            assert ":latest" not in text and "newTag: latest" not in text, path


def test_graceful_shutdown_covers_the_longest_work(rendered: Rendered) -> None:
    env = env_values(rendered.env)
    for workload in long_running(rendered):
        spec = pod_spec(workload)
        grace = spec.get("terminationGracePeriodSeconds")
        assert grace is not None, workload["metadata"]["name"]
        for c in spec["containers"]:
            assert "preStop" in c.get("lifecycle", {}), f"{workload['metadata']['name']}"
            assert prestop_seconds(c) < grace
    worker = pod_spec(rendered.find("Deployment", names.WORKER))
    task_limit = int(env.get("TASK_TIME_LIMIT_SECONDS", "600"))
    assert worker["terminationGracePeriodSeconds"] >= (
        task_limit + prestop_seconds(worker["containers"][0]) + 30
    )
    api = pod_spec(rendered.find("Deployment", names.API))
    long_poll = int(env.get("LONG_POLL_MAX_SECONDS", "60"))
    assert api["terminationGracePeriodSeconds"] >= long_poll + prestop_seconds(api["containers"][0])


def test_api_and_worker_wait_for_the_schema(rendered: Rendered) -> None:
    for component in (names.API, names.WORKER):
        inits = pod_spec(rendered.find("Deployment", component)).get("initContainers", [])
        assert [c["args"] for c in inits] == [["migrate", "--check", "--wait=600"]], component
        assert inits[0]["image"] == rendered.image


# --- Names, labels, configuration --------------------------------------------------------------


def test_workload_and_service_names_and_labels_match_the_names_module(rendered: Rendered) -> None:
    assert {d["metadata"]["name"] for d in rendered.of_kind("Deployment")} == set(names.DEPLOYMENTS)
    assert {s["metadata"]["name"] for s in rendered.of_kind("StatefulSet")} == set(
        names.STATEFULSETS
    )
    assert {s["metadata"]["name"] for s in rendered.of_kind("Service")} == set(
        names.SERVICES.values()
    )
    assert [p["metadata"]["name"] for p in rendered.of_kind("PersistentVolumeClaim")] == [
        names.UPLOADS_PVC
    ]
    for workload in workloads(rendered.docs):
        labels = pod_template(workload)["metadata"]["labels"]
        assert labels[names.NAME_LABEL] == names.APP_NAME
        assert labels[names.COMPONENT_LABEL] in POD_COMPONENTS
        assert labels[names.INSTANCE_LABEL] == rendered.namespace
        if workload["kind"] not in JOB_KINDS:
            want = dict(kv.split("=") for kv in names.selector(component_of(workload)).split(","))
            assert workload["spec"]["selector"]["matchLabels"] == want
            assert workload["metadata"]["name"] == component_of(workload)
    for service in rendered.of_kind("Service"):
        pods = [w for w in long_running(rendered) if component_of(w) == service["metadata"]["name"]]
        assert len(pods) == 1, service["metadata"]["name"]
    assert rendered.find("Service", names.POSTGRES)["spec"]["clusterIP"] == "None"


def test_config_map_is_generated_from_the_env_file(rendered: Rendered) -> None:
    config_maps = [
        c
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["name"].startswith(names.CONFIG_MAP)
    ]
    assert len(config_maps) == 1
    config = config_maps[0]
    assert config["metadata"]["name"] != names.CONFIG_MAP, "needs its content-hash suffix"
    assert config["data"] == env_values(rendered.env)
    toolkit_only = {"IMAGE_NAME", "API_HOST", "K8S_NAMESPACE", "API_BASE_URL", "KUBECONFIG_PATH"}
    assert not toolkit_only & set(config["data"]), "toolkit settings must not reach pods"
    for workload in workloads(rendered.docs):
        if component_of(workload) in BACKEND_COMPONENTS:
            for c in containers(pod_spec(workload)):
                refs = [e["configMapRef"]["name"] for e in c["envFrom"]]
                assert refs == [config["metadata"]["name"]]


def test_a_config_change_renames_the_config_map_so_pods_roll(tmp_path: Path) -> None:
    for part in ("k8s", "env"):
        shutil.copytree(REPO_ROOT / part, tmp_path / part)
    before = render_env("stage", "1.0.0", image_name="img", root=tmp_path)
    env_file = tmp_path / "env" / "stage.env"
    changed = env_file.read_text().replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG")
    assert "LOG_LEVEL=DEBUG" in changed
    env_file.write_text(changed)
    after = render_env("stage", "1.0.0", image_name="img", root=tmp_path)
    assert api_config(before) != api_config(after)


def api_config(rendered: Rendered) -> str:
    api = pod_spec(rendered.find("Deployment", names.API))
    return str(api["containers"][0]["envFrom"][0]["configMapRef"]["name"])


def test_overrides_that_invoke_config_shows_reach_the_manifests() -> None:
    """`--set` (and the process environment) win over the env file in the pods too."""
    plain = render_env("stage")
    changed = render_env(
        "stage", flags={"LOG_LEVEL": "DEBUG", "API_HOST": "api.example.org", "API_REPLICAS": "2"}
    )
    config = next(
        c for c in changed.of_kind("ConfigMap") if c["metadata"]["name"] == api_config(changed)
    )
    assert config["data"]["LOG_LEVEL"] == "DEBUG"
    assert api_config(plain) != api_config(changed)
    assert changed.find("Ingress", names.API)["spec"]["rules"][0]["host"] == "api.example.org"
    assert changed.find("Deployment", names.API)["spec"]["replicas"] == 2


def test_replicas_and_hosts_come_from_the_settings(rendered: Rendered) -> None:
    toolkit = settings(rendered.env).toolkit
    assert rendered.find("Deployment", names.API)["spec"]["replicas"] == toolkit.API_REPLICAS
    worker = rendered.find("Deployment", names.WORKER)
    assert worker["spec"]["replicas"] == toolkit.WORKER_REPLICAS
    hosts = {
        i["metadata"]["name"]: i["spec"]["rules"][0]["host"] for i in rendered.of_kind("Ingress")
    }
    assert hosts[names.API] == toolkit.API_HOST
    assert hosts[names.FLOWER] == toolkit.FLOWER_INGRESS_HOST
    assert set(hosts.values()) == {toolkit.API_HOST, toolkit.FLOWER_INGRESS_HOST}


def test_environments_do_not_share_hosts(all_rendered: dict[str, Rendered]) -> None:
    hosts = [
        {i["spec"]["rules"][0]["host"] for i in rendered.of_kind("Ingress")}
        for rendered in all_rendered.values()
    ]
    assert sum(map(len, hosts)) == len(set().union(*hosts)) == 2 * len(hosts)


# --- Secrets -----------------------------------------------------------------------------------


def test_no_secret_objects_or_data_anywhere_in_k8s() -> None:
    for path in (REPO_ROOT / "k8s").rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        assert "secretGenerator" not in text, path
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                assert (doc or {}).get("kind") != "Secret", path


def test_no_secret_in_rendered_output(rendered: Rendered) -> None:
    assert not rendered.of_kind("Secret")
    for where, _, c in all_containers(rendered):
        for var in c.get("env", []):
            assert var["name"] not in ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASSWORD")
            assert var["name"] != "FLOWER_PASSWORD", where
            assert "secretKeyRef" not in var.get("valueFrom", {}), f"{where}: files only"


def test_secrets_are_known_and_mounted_as_files_behind_file_variables(rendered: Rendered) -> None:
    api_auth = (names.ApiAuthSecret.NAME, names.ApiAuthSecret.PASSWORD)
    expected = {
        "POSTGRES_PASSWORD_FILE": (names.PostgresSecret.NAME, names.PostgresSecret.PASSWORD),
        "RABBITMQ_DEFAULT_PASSWORD_FILE": (
            names.RabbitMQSecret.NAME,
            names.RabbitMQSecret.PASSWORD,
        ),
        "FLOWER_PASSWORD_FILE": (names.FlowerSecret.NAME, names.FlowerSecret.PASSWORD),
        "VERIFY_AUTH_PASSWORD_FILE": api_auth,
    }
    for workload in workloads(rendered.docs):
        spec = pod_spec(workload)
        # Only the verify Job reads the API's basic-auth password (tests/manifests/test_verify.py).
        known = {(s.NAME, s.PASSWORD) for s in names.SECRETS}
        if component_of(workload) == names.VERIFY:
            known = {api_auth}
        for c in containers(spec):
            files = secret_files(spec, c)
            assert set(files.values()) <= known, f"{workload['metadata']['name']}/{c['name']}"
            for path in files:
                assert path.startswith(names.SECRET_MOUNT_ROOT + "/")
            for var in c.get("env", []):
                if var["name"].endswith("_FILE"):
                    assert files.get(var["value"]) == expected[var["name"]], var
            if component_of(workload) in (names.API, names.WORKER, names.MIGRATE, names.RETENTION):
                file_vars = {v["name"] for v in c.get("env", [])}
                assert {"POSTGRES_PASSWORD_FILE", "RABBITMQ_DEFAULT_PASSWORD_FILE"} <= file_vars
    flower_spec = pod_spec(rendered.find("Deployment", names.FLOWER))
    flower = flower_spec["containers"][0]
    assert {v["name"] for v in flower["env"]} == {
        "RABBITMQ_DEFAULT_PASSWORD_FILE",
        "FLOWER_PASSWORD_FILE",
    }
    # Least privilege: Flower never uses the database, so its password is not even mounted.
    mounted = {name for name, _ in secret_files(flower_spec, flower).values()}
    assert names.PostgresSecret.NAME not in mounted


# --- Namespaces, network, disruptions, edge ----------------------------------------------------


def test_namespace_enforces_restricted(rendered: Rendered) -> None:
    (namespace,) = rendered.of_kind("Namespace")
    labels = namespace["metadata"]["labels"]
    assert {k: labels[k] for k in names.NAMESPACE_LABELS} == names.NAMESPACE_LABELS
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _pods(rendered: Rendered) -> dict[str, Pod]:
    return {
        component_of(w): Pod(rendered.namespace, pod_template(w)["metadata"]["labels"])
        for w in workloads(rendered.docs)
    }


def _ports(rendered: Rendered) -> dict[str, int]:
    return {
        component_of(w): p["containerPort"]
        for w in workloads(rendered.docs)
        for p in pod_spec(w)["containers"][0].get("ports", [])
    }


TRAEFIK = Pod(names.INGRESS_CONTROLLER_NAMESPACE, dict(names.INGRESS_CONTROLLER_LABELS))
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod("default", {"app": "anything"})


def test_network_policies_allow_exactly_the_needed_connections(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods, ports = _pods(rendered), _ports(rendered)
    expected = {
        (names.API, names.POSTGRES),
        (names.API, names.RABBITMQ),
        (names.WORKER, names.POSTGRES),
        (names.WORKER, names.RABBITMQ),
        (names.FLOWER, names.RABBITMQ),
        (names.MIGRATE, names.POSTGRES),
        (names.RETENTION, names.POSTGRES),
        (names.VERIFY, names.API),
    }
    actual = {
        (src, dst)
        for src in pods
        for dst, port in ports.items()
        if src != dst and allowed(policies, pods[src], pods[dst], port)
    }
    assert actual == expected
    # Each side alone is as narrow as the pair: a loose ingress or egress rule fails too.
    for side in (ingress_allows, egress_allows):
        one_side = {
            (src, dst)
            for src in pods
            for dst, port in ports.items()
            if src != dst and side(policies, pods[src], pods[dst], port)
        }
        assert one_side == expected, side.__name__
    from_edge = {dst for dst, port in ports.items() if allowed(policies, TRAEFIK, pods[dst], port)}
    assert from_edge == {names.API, names.FLOWER}
    assert not any(allowed(policies, STRANGER, pods[d], p) for d, p in ports.items())
    for pod in pods.values():
        assert allowed(policies, pod, KUBE_DNS, 53, "UDP") and allowed(policies, pod, KUBE_DNS, 53)
        assert not allowed(policies, pod, STRANGER, 443)


def test_default_deny_covers_every_pod(rendered: Rendered) -> None:
    deny = rendered.find("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_disruption_budgets_never_block_a_drain(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for workload in long_running(rendered):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        mine = [
            b
            for b in budgets
            if all(labels.get(k) == v for k, v in b["spec"]["selector"]["matchLabels"].items())
        ]
        assert len(mine) == 1, workload["metadata"]["name"]
        spec = mine[0]["spec"]
        replicas = workload["spec"].get("replicas", 1)
        if "maxUnavailable" in spec:
            assert int(spec["maxUnavailable"]) >= 1
        else:
            assert replicas - int(spec["minAvailable"]) >= 1
        assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


def test_ingresses_use_traefik_and_flower_only_behind_basic_auth(rendered: Rendered) -> None:
    for ingress in rendered.of_kind("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "traefik"
    flower_refs = rendered.find("Ingress", names.FLOWER)["metadata"]["annotations"][
        "traefik.ingress.kubernetes.io/router.middlewares"
    ]
    auth = rendered.find("Middleware", "flower-auth")["spec"]["basicAuth"]
    assert flower_refs.split(",")[-1] == f"{rendered.namespace}-flower-auth@kubernetescrd"
    assert auth["secret"] == names.FlowerSecret.NAME
    # The only way to Flower is its Ingress (its Service is ClusterIP, no NodePort).
    assert rendered.find("Service", names.FLOWER)["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_edge_body_limit_matches_what_the_api_accepts(rendered: Rendered) -> None:
    """The API takes MAX_UPLOAD_SIZE_BYTES of file plus its multipart envelope allowance."""
    max_file = int(env_values(rendered.env)["MAX_UPLOAD_SIZE_BYTES"])
    envelope = backend_constant("datasets/upload.py", "ENVELOPE_ALLOWANCE")
    limit = rendered.find("Middleware", "upload-limit")["spec"]["buffering"]
    assert limit["maxRequestBodyBytes"] == max_file + envelope
    for ingress in (names.API, "api-limited"):  # the last step before the API, on every route
        api_refs = rendered.find("Ingress", ingress)["metadata"]["annotations"][
            "traefik.ingress.kubernetes.io/router.middlewares"
        ]
        assert api_refs.split(",")[-1] == f"{rendered.namespace}-upload-limit@kubernetescrd"


# --- Memory budget -----------------------------------------------------------------------------


def test_memory_requests_of_both_overlays_fit_the_budget(
    all_rendered: dict[str, Rendered], capsys: pytest.CaptureFixture[str]
) -> None:
    per_env = {env: budget_memory_requests(r) for env, r in all_rendered.items()}
    total = sum(sum(requests.values()) for requests in per_env.values())
    report = "; ".join(
        f"{env}: {sum(r.values()) // MIB}Mi ("
        + ", ".join(f"{k} {v // MIB}Mi" for k, v in sorted(r.items()))
        + ")"
        for env, r in per_env.items()
    )
    with capsys.disabled():
        print(
            f"\nmemory requests: total {total // MIB}Mi of {MEMORY_BUDGET_BYTES // MIB}Mi; {report}"
        )
    assert total <= MEMORY_BUDGET_BYTES, report

    assert per_env["prod"].keys() == per_env["stage"].keys()  # same workloads, none forgotten


def test_the_deploy_jobs_count_once_as_the_larger_of_the_two(rendered: Rendered) -> None:
    """The migrate Job and the verify Job never run at the same time (deploy starts verify
    after the migrate Job has completed and the rollouts are done)."""
    requests = overlay_memory_requests(rendered.docs)
    budget = budget_memory_requests(rendered)
    migrate, verify = (
        requests[f"Job/{job}"] for job in (rendered.migrate_job, rendered.verify_job)
    )
    assert budget[DEPLOY_JOBS] == max(migrate, verify)
    assert sum(budget.values()) == sum(requests.values()) - min(migrate, verify)
    assert budget[f"CronJob/{names.RETENTION}"] > 0  # retention may run at any time: it counts
