"""Runs a Desbordante algorithm on a stored CSV and turns its answer into column names."""

from __future__ import annotations

import importlib
import tempfile
from contextlib import chdir
from pathlib import Path
from typing import Any

from desbordante_service.profiling.primitives import PRIMITIVES


def run(
    primitive: str,
    algorithm: str,
    config: dict[str, Any],
    path: Path,
    separator: str,
    has_header: bool,
    columns: list[str],
) -> dict[str, Any]:
    """Execute the algorithm in this process; raises on algorithm or data errors."""
    desbordante = importlib.import_module("desbordante")
    module = getattr(desbordante, PRIMITIVES[primitive].module)
    algo = getattr(module.algorithms, algorithm)()
    table = (str(path.resolve()), separator, has_header)
    # Some algorithms (Faida) write scratch files under ./temp: keep them in a directory of the
    # system's temporary space (writable in the read-only image too) that is removed afterwards.
    with tempfile.TemporaryDirectory(prefix="desbordante-") as scratch, chdir(scratch):
        if primitive == "ind":
            algo.load_data(tables=[table])
        else:
            algo.load_data(table=table)
        algo.execute(**config)
    if primitive in ("fd", "afd"):
        return {"fds": _fds(algo.get_fds(), columns)}
    if primitive == "ucc":
        return {"uccs": sorted([columns[i] for i in ucc.indices] for ucc in algo.get_uccs())}
    return {"inds": _inds(algo.get_inds(), columns)}


def _fds(fds: list[Any], columns: list[str]) -> list[dict[str, Any]]:
    items = [
        {"lhs": [columns[i] for i in fd.lhs_indices], "rhs": columns[fd.rhs_index]} for fd in fds
    ]
    return _unique_sorted(items)


def _inds(inds: list[Any], columns: list[str]) -> list[dict[str, Any]]:
    items = [
        {
            "lhs": [columns[i] for i in ind.get_lhs().column_indices],
            "rhs": [columns[i] for i in ind.get_rhs().column_indices],
        }
        for ind in inds
    ]
    return _unique_sorted(items)


def _unique_sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort by size then names, dropping duplicates that some algorithms report."""
    unique = {repr((d["lhs"], d["rhs"])): d for d in items}
    return sorted(unique.values(), key=lambda d: (len(d["lhs"]), d["lhs"], d["rhs"]))
