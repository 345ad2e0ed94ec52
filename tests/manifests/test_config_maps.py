"""The generated ConfigMaps: the app's `desbordante-config` and one per StatefulSet.

postgres and rabbitmq read their own ConfigMaps, which hold only the keys they use, so an app
setting (LOG_LEVEL, ...) never recreates `postgres-0` or `rabbitmq-0`, while a change of one of
their own keys still rolls them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests.render import Rendered

from .kube_objects import containers, pod_spec, pod_template, render_env, settings, workloads

# StatefulSet -> (its ConfigMap, the keys it holds).
STATEFUL: dict[str, tuple[str, tuple[str, ...]]] = {
    names.POSTGRES: (names.POSTGRES_CONFIG_MAP, names.POSTGRES_CONFIG_KEYS),
    names.RABBITMQ: (names.RABBITMQ_CONFIG_MAP, names.RABBITMQ_CONFIG_KEYS),
}


def generated(rendered: Rendered, base: str) -> dict[str, Any]:
    """The one ConfigMap generated as BASE (its name has kustomize's hash suffix)."""
    (config,) = [
        c
        for c in rendered.of_kind("ConfigMap")
        if re.fullmatch(rf"{re.escape(base)}-[a-z0-9]{{10}}", c["metadata"]["name"])
    ]
    return config


def config_map_refs(spec: dict[str, Any]) -> set[tuple[str, str | None]]:
    """(ConfigMap, key) for every ConfigMap a pod spec reads; key None for a whole map."""
    refs: set[tuple[str, str | None]] = set()
    for c in containers(spec):
        refs |= {
            (e["configMapRef"]["name"], None) for e in c.get("envFrom", []) if "configMapRef" in e
        }
        for var in c.get("env", []):
            ref = var.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:
                refs.add((ref["name"], ref["key"]))
    for volume in spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        refs |= {(s["configMap"]["name"], None) for s in sources if "configMap" in s}
    return refs


def key_refs(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(name, key) for name, key in config_map_refs(spec) if key is not None}


def template(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    return pod_template(rendered.find(kind, name))


def app_config(rendered: Rendered) -> str:
    return str(generated(rendered, names.CONFIG_MAP)["metadata"]["name"])


# --- Every render ------------------------------------------------------------------------------


def test_every_config_map_reference_resolves(rendered: Rendered) -> None:
    """A missing map or key is CreateContainerConfigError at run time."""
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in rendered.of_kind("ConfigMap")}
    for workload in workloads(rendered.docs):
        for name, key in config_map_refs(pod_spec(workload)):
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            assert name in maps, f"{where}: no ConfigMap {name}"
            assert key is None or key in maps[name], f"{where}: no key {key} in {name}"


def test_statefulsets_read_only_their_own_config_maps(rendered: Rendered) -> None:
    app = generated(rendered, names.CONFIG_MAP)
    backend = settings(rendered.env).backend
    for component, (base, keys) in STATEFUL.items():
        config = generated(rendered, base)
        name = config["metadata"]["name"]
        assert config["data"] == {key: str(getattr(backend, key)) for key in keys}, component
        assert config["metadata"]["labels"] == app["metadata"]["labels"]
        spec = pod_spec(rendered.find("StatefulSet", component))
        assert key_refs(spec) == {(name, key) for key in keys}, component
        assert app["metadata"]["name"] not in {ref for ref, _ in config_map_refs(spec)}
    # Nothing else reads them: the app keeps reading desbordante-config.
    own = {generated(rendered, base)["metadata"]["name"] for base, _ in STATEFUL.values()}
    for workload in workloads(rendered.docs):
        if workload["kind"] != "StatefulSet":
            assert not own & {ref for ref, _ in config_map_refs(pod_spec(workload))}


def test_rabbitmq_gets_the_vhost_the_app_uses_when_the_setting_is_empty() -> None:
    """An empty RABBITMQ_VHOST means `/` to the app (and is left out of desbordante-config);
    the broker's ConfigMap has the same effective value, so its init container has its key."""
    rendered = render_env("stage", flags={"RABBITMQ_VHOST": ""})
    assert "RABBITMQ_VHOST" not in generated(rendered, names.CONFIG_MAP)["data"]
    assert generated(rendered, names.RABBITMQ_CONFIG_MAP)["data"]["RABBITMQ_VHOST"] == "/"


# --- What a change rolls -----------------------------------------------------------------------


def with_config_name(value: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """VALUE with every occurrence of the ConfigMap name OLD replaced by NEW."""
    result: dict[str, Any] = json.loads(json.dumps(value).replace(f'"{old}"', f'"{new}"'))
    return result


def test_an_app_setting_rolls_the_app_but_not_the_database_or_the_broker() -> None:
    """Changing LOG_LEVEL recreated postgres-0 and rabbitmq-0 when they read desbordante-config."""
    info = render_env("stage", flags={"LOG_LEVEL": "INFO"})
    debug = render_env("stage", flags={"LOG_LEVEL": "DEBUG"})
    for name in names.STATEFULSETS:
        assert info.find("StatefulSet", name) == debug.find("StatefulSet", name), name
    for base, _ in STATEFUL.values():
        assert generated(info, base) == generated(debug, base)
    old, new = app_config(info), app_config(debug)
    assert old != new
    for name in names.DEPLOYMENTS:
        before, after = template(info, "Deployment", name), template(debug, "Deployment", name)
        assert before != after, f"{name} must roll"
        assert with_config_name(after, new, old) == before, f"{name}: only the ConfigMap differs"


def test_a_database_setting_rolls_postgres_and_a_broker_setting_rabbitmq() -> None:
    plain = render_env("stage")
    database = render_env("stage", flags={"POSTGRES_DB": "desbordante_other"})
    broker = render_env("stage", flags={"RABBITMQ_DEFAULT_USER": "someone-else"})
    postgres, rabbitmq = ("StatefulSet", names.POSTGRES), ("StatefulSet", names.RABBITMQ)
    assert template(database, *postgres) != template(plain, *postgres)
    assert database.find(*rabbitmq) == plain.find(*rabbitmq)
    assert generated(database, names.POSTGRES_CONFIG_MAP)["data"]["POSTGRES_DB"] == (
        "desbordante_other"
    )
    assert template(broker, *rabbitmq) != template(plain, *rabbitmq)
    assert broker.find(*postgres) == plain.find(*postgres)
    assert generated(broker, names.RABBITMQ_CONFIG_MAP)["data"]["RABBITMQ_DEFAULT_USER"] == (
        "someone-else"
    )
    # The app reads these settings too, so it rolls with either change.
    assert len({app_config(plain), app_config(database), app_config(broker)}) == 3
