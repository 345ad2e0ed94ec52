"""Helpers over rendered manifests: pod templates, containers, quantities, env files."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke import Context

from desbordante_ops.cluster.manifests.render import Rendered, render
from desbordante_ops.core.settings import REPO_ROOT, EnvConfig, load_config

# The release tag the tests render (dots become dashes in the migrate Job name).
TEST_TAG = "1.2.3-rc.1"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet")
JOB_KINDS = ("Job", "CronJob")  # run to completion: no Service, selector or probes
MIB = 1024 * 1024
_BINARY = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every object with a pod template."""
    return (doc for doc in docs if doc["kind"] in WORKLOAD_KINDS)


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload (a CronJob's is inside its jobTemplate)."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return pod_template(workload)["spec"]


def containers(spec: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    """The containers of a pod spec, init containers first when INIT."""
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def secret_files(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mounted path -> (Secret name, key) for every secret file the container sees."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, tuple[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})  # volumeClaimTemplates are not listed here
        sources = [{"secret": volume["secret"]}] if "secret" in volume else []
        sources += volume.get("projected", {}).get("sources", [])
        for source in sources:
            secret = source.get("secret")
            if secret is None:
                continue
            name = secret.get("secretName") or secret["name"]
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (name, item["key"])
    return files


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes memory quantity in bytes ("96Mi", "1Gi", "128M", 1024)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G|)", str(value))
    if match is None:
        raise ValueError(f"unsupported quantity {value!r}")
    number, unit = int(match[1]), match[2]
    return number * (_BINARY.get(unit) or _DECIMAL[unit])


def memory_request(spec: dict[str, Any]) -> int:
    """Effective memory request of one pod, as the scheduler counts it:
    max(sum of app containers, largest init container)."""

    def req(container: dict[str, Any]) -> int:
        return quantity_bytes(container["resources"]["requests"]["memory"])

    apps = sum(req(c) for c in spec["containers"])
    inits = [req(c) for c in spec.get("initContainers", [])]
    return max([apps, *inits])


def replicas(workload: dict[str, Any]) -> int:
    if workload["kind"] == "Job":
        return int(workload["spec"].get("parallelism", 1))
    if workload["kind"] == "CronJob":  # concurrencyPolicy Forbid: one Job at a time
        return int(workload["spec"]["jobTemplate"]["spec"].get("parallelism", 1))
    return int(workload["spec"].get("replicas", 1))


def overlay_memory_requests(docs: list[dict[str, Any]]) -> dict[str, int]:
    """Memory requests (bytes) per workload "Kind/name", replicas included."""
    return {
        f"{w['kind']}/{w['metadata']['name']}": memory_request(pod_spec(w)) * replicas(w)
        for w in workloads(docs)
    }


# The memory budget's entry for the Jobs deploy runs one after the other.
DEPLOY_JOBS = "Jobs migrate|verify (the larger)"


def budget_memory_requests(rendered: Rendered) -> dict[str, int]:
    """The memory budget of one environment, per workload "Kind/name" (replicas included):
    everything rendered counts, except that deploy's migrate and verify Jobs, which never run
    at the same time (verify starts after the migrate Job has completed and the rollouts are
    done), count once, as the larger of the two (DEPLOY_JOBS). The retention CronJob may run
    at any time, so it counts in full."""
    requests = overlay_memory_requests(rendered.docs)
    jobs = [requests.pop(f"Job/{name}") for name in (rendered.migrate_job, rendered.verify_job)]
    requests[DEPLOY_JOBS] = max(jobs)
    return requests


def settings(env: str, flags: dict[str, str] | None = None, root: Path = REPO_ROOT) -> EnvConfig:
    """The settings of ENV from its env file and FLAGS only (not this process's environment)."""
    return load_config(env, flags, environ={}, root=root)


def render_env(
    env: str, tag: str = TEST_TAG, flags: dict[str, str] | None = None, **kwargs: Any
) -> Rendered:
    """ENV's manifests for TAG, rendered by the toolkit's own render path."""
    return render(Context(), settings(env, flags, kwargs.pop("root", REPO_ROOT)), tag, **kwargs)


def env_values(env: str) -> dict[str, str]:
    """The backend settings of ENV, as the ConfigMap must carry them."""
    return settings(env).backend_env()


def backend_constant(relative: str, name: str, root: Path = REPO_ROOT) -> int:
    """An int constant of the backend source (the manifests session does not install it)."""
    tree = ast.parse((root / "backend" / "src" / "desbordante_service" / relative).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return _int_expr(node.value)
    raise LookupError(f"{name} not found in {relative}")


def _int_expr(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _int_expr(node.left) * _int_expr(node.right)
    raise ValueError(f"not a constant integer expression: {ast.dump(node)}")
