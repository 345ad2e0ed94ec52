"""Cluster budget: requests/limits of the rendered overlays against the 2 vCPU / 2 GiB server."""

from __future__ import annotations

from typing import Any

from invoke import Context

from bench.report import Check, Result
from desbordante_ops.cluster.manifests import render
from desbordante_ops.core.settings import CLUSTER_ENVS, load_config

SERVER_CPU_M = 2000
SERVER_MEMORY_MI = 2048
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}


def cpu_m(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def memory_mi(value: Any) -> float:
    text = str(value)
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text) / 2**20


def totals(rendered: render.Rendered) -> dict[str, float]:
    """Sum over replicas and containers (init containers excluded: they do not overlap)."""
    sums = dict.fromkeys(("cpu_req", "cpu_lim", "mem_req", "mem_lim"), 0.0)
    for kind in WORKLOADS:
        for doc in rendered.of_kind(kind):
            spec = doc["spec"]
            replicas = spec.get("replicas", 1)
            for container in spec["template"]["spec"]["containers"]:
                resources = container.get("resources", {})
                for key, section in (("req", "requests"), ("lim", "limits")):
                    values = resources.get(section, {})
                    sums[f"cpu_{key}"] += replicas * cpu_m(values.get("cpu", 0))
                    sums[f"mem_{key}"] += replicas * memory_mi(values.get("memory", 0))
    return sums


def _row(name: str, sums: dict[str, float]) -> list[str]:
    return [
        name,
        f"{sums['cpu_req']:.0f}m",
        f"{sums['cpu_lim']:.0f}m",
        f"{sums['mem_req']:.0f} Mi",
        f"{sums['mem_lim']:.0f} Mi",
    ]


def run(runs: int) -> Result:
    per_env = {
        env: totals(render.render(Context(), load_config(env), "v0.0.0")) for env in CLUSTER_ENVS
    }
    together = {key: sum(s[key] for s in per_env.values()) for key in next(iter(per_env.values()))}
    rows = [_row(env, sums) for env, sums in per_env.items()]
    rows.append(_row("together", together))
    rows.append(["server", f"{SERVER_CPU_M}m", "", f"{SERVER_MEMORY_MI} Mi", ""])
    checks = [
        Check(
            "memory requests (all envs) fit 2 GiB",
            f"{together['mem_req']:.0f} / {SERVER_MEMORY_MI} Mi",
            together["mem_req"] <= SERVER_MEMORY_MI,
        ),
        Check(
            "CPU requests (all envs) fit 2 vCPU",
            f"{together['cpu_req']:.0f} / {SERVER_CPU_M}m",
            together["cpu_req"] <= SERVER_CPU_M,
        ),
        Check(
            "memory limits (all envs) vs 2 GiB (overcommit)",
            f"{together['mem_lim'] / SERVER_MEMORY_MI:.2f}x of the server",
            None,
        ),
    ]
    columns = ["environment", "CPU requests", "CPU limits", "memory requests", "memory limits"]
    data = {"per_env": per_env, "together": together, "server_cpu_m": SERVER_CPU_M}
    return Result("budget", columns, rows, checks, {**data, "server_memory_mi": SERVER_MEMORY_MI})
