"""The toolkit's layers, read from its source: tasks -> area libraries -> core, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "desbordante_ops"
# Which packages each package may import (besides itself).
ALLOWED = {
    "core": set(),
    "image": {"core"},
    "local": {"core", "image"},
    "cluster": {"core", "image"},
    "backup": {"core", "image", "local", "cluster"},
    "tasks": {"core", "image", "local", "cluster", "backup"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> tuple[set[str], list[str]]:
    """Our modules PATH imports at module level, and any imports found inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("desbordante_ops")
        ):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("desbordante_ops")}
    nested = [
        f"line {inner.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
        if isinstance(inner, ast.Import | ast.ImportFrom)
    ]
    return found, nested


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path)[0] for name, path in MODULES.items()}


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_lower_layers_at_module_level(module: str) -> None:
    imported, nested = imports_of(MODULES[module])
    assert not nested, f"{module}: imports inside functions at {', '.join(nested)}"
    source = MODULES[module].read_text(encoding="utf-8")
    assert "importlib" not in source, f"{module}: no importlib tricks"
    if not area(module):
        return
    for target in imported:
        if area(target) and area(target) != area(module):
            assert area(target) in ALLOWED[area(module)], f"{module} imports {target}"


def test_no_import_cycles() -> None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in GRAPH.get(node, ()):
            if target not in MODULES or target == node:
                continue
            if state.get(target) == "open":
                cycle = path[path.index(target) :] if target in path else path
                raise AssertionError(" -> ".join([*cycle, target]))
            if target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_a_layer_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from desbordante_ops.tasks import namespace\n\ndef f():\n    import os\n")
    imported, nested = imports_of(bad)
    assert imported == {"desbordante_ops.tasks"} and nested == ["line 4"]


def run_calls_without_in_stream(path: Path) -> list[int]:
    """Lines of `c.run(...)` / `self.c.run(...)` calls that do not pass `in_stream`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
            and ast.unparse(node.func.value) in ("c", "self.c", "run.c")
            and not any(keyword.arg == "in_stream" for keyword in node.keywords)
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", sorted(MODULES))
def test_outside_tools_never_read_our_stdin(module: str) -> None:
    """Every command runs with `in_stream=False`: Invoke would otherwise hand it our stdin (a
    piped answer meant for a prompt would be eaten, and pytest's capture breaks)."""
    assert run_calls_without_in_stream(MODULES[module]) == []


# --- the shape of the cluster layer (plans, sub-packages, names) ---------------------------------


def test_no_dry_run_is_written_beside_its_run() -> None:
    """A dry run is the plan the real run executes: no `*_plan.py` module re-describes a run,
    and no task module branches on --dry-run (core.plan.execute takes it)."""
    assert [p.name for p in PACKAGE.rglob("*_plan.py")] == []
    for path in (PACKAGE / "tasks").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        branches = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.If | ast.IfExp)
            and any(isinstance(n, ast.Name) and n.id == "dry_run" for n in ast.walk(node.test))
        ]
        assert branches == [], f"{path.name}: `if dry_run` at lines {branches}"


def test_no_module_of_ours_is_imported_under_another_name() -> None:
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "desbordante_ops"
            ):
                aliased = [a.name for a in node.names if a.asname and a.asname != a.name]
                assert aliased == [], f"{name}: imports {aliased} under another name"
            if isinstance(node, ast.Import):
                aliased = [
                    a.name for a in node.names if a.name.startswith("desbordante_ops") and a.asname
                ]
                assert aliased == [], f"{name}: imports {aliased} under another name"


def test_library_module_names_do_not_clash_across_packages() -> None:
    """Tasks are named after `invoke --list` areas; every other module name is unique, so a
    name says which module it is without its package."""
    seen: dict[str, str] = {}
    for name in MODULES:
        parts = name.split(".")
        if area(name) == "tasks" or len(parts) < 3 or MODULES[name].name == "__init__.py":
            continue
        leaf = parts[-1]
        assert leaf not in seen, f"{name} and {seen[leaf]} share the name {leaf!r}"
        seen[leaf] = name
    packages = {name.split(".")[-1] for name, path in MODULES.items() if path.name == "__init__.py"}
    clashes = sorted(set(seen) & packages)
    assert clashes == [], f"modules named like packages: {clashes}"


def test_the_kube_connection_is_typed() -> None:
    tree = ast.parse((PACKAGE / "cluster" / "kube" / "client.py").read_text(encoding="utf-8"))
    kube = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Kube")
    fields = {
        node.target.id: ast.unparse(node.annotation)
        for node in kube.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert len(fields) >= 8
    assert [f for f, annotation in fields.items() if "Any" in annotation] == []
