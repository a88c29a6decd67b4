"""The package's architecture, held to what its docstrings state: layers, no import cycles, no device `==`.

Every import inside paint_ray counts, lazy ones (inside functions) and TYPE_CHECKING ones too: a lazy
import that points up a layer is still an arrow the wrong way.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paint_ray"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit: a first-level package or a top-level module ('paint_ray' for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "paint_ray"


def unit_doc(unit: str) -> str:
    path = PACKAGE / unit / "__init__.py" if (PACKAGE / unit).is_dir() else PACKAGE / f"{unit}.py"
    if unit == "paint_ray":
        path = PACKAGE / "__init__.py"
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def allowed(unit: str) -> set[str] | None:
    """The units `unit` may import, from its docstring's 'May import:' line (None: anything)."""
    found = re.search(r"^May import: (.+)$", unit_doc(unit), re.M)
    assert found, f"{unit}'s docstring has no 'May import:' line"
    text = found.group(1).strip()
    if text.startswith("anything"):
        return None
    if text.startswith("nothing"):
        return set()
    return {w.strip() for w in text.split(",")}


def imports(module: str) -> list[tuple[str, int]]:
    """(imported paint_ray module, line) for every import statement of `module`, at any depth."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full if full in MODULES else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(t, line) for t, line in out if t == "paint_ray" or t.startswith("paint_ray.")]


UNITS = sorted({unit_of(m) for m in MODULES})


@pytest.mark.parametrize("unit", UNITS)
def test_every_import_follows_the_layering_the_docstrings_state(unit):
    ok = allowed(unit)
    if ok is None:
        return
    unknown = ok - set(UNITS)
    assert not unknown, f"{unit}'s 'May import:' names units that do not exist: {sorted(unknown)}"
    wrong = [f"{m}:{line} imports {t}" for m in MODULES if unit_of(m) == unit for t, line in imports(m)
             if unit_of(t) != unit and unit_of(t) not in ok]
    assert not wrong, f"{unit} may import only {sorted(ok) or 'nothing'}; " + "; ".join(wrong)


def test_the_layering_itself_has_no_cycle():
    graph = {u: (allowed(u) or set()) - {u} for u in UNITS if allowed(u) is not None}
    assert _cycle(graph) is None, f"the declared layers form a cycle: {' -> '.join(_cycle(graph))}"


def test_no_import_cycle_between_modules():
    graph = {m: {t for t, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}        # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_none_where_there_is_none():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _device_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing devices with == or != (`cuda` is not equal to `cuda:0`: ask `.type` or `is_cuda`)."""
    def is_device(e: ast.expr) -> bool:
        if isinstance(e, ast.Attribute) and e.attr == "device":
            return True
        if isinstance(e, ast.Name) and (e.id == "device" or e.id.endswith("_device")):
            return True
        return isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "device"
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            if any(is_device(e) for e in [node.left, *node.comparators]):
                lines.append(node.lineno)
    return lines


def test_no_module_compares_devices_with_equality():
    found = [f"{m}:{line}" for m, p in MODULES.items() for line in _device_comparisons(ast.parse(p.read_text()))]
    assert not found, "devices compared with ==/!= (ask .type or .is_cuda): " + ", ".join(found)


def test_the_device_check_sees_the_comparison_that_broke_cuda():
    broken = ast.parse("if images.device == device or device.type != 'cuda':\n    pass\n")
    assert _device_comparisons(broken) == [1]
    assert _device_comparisons(ast.parse("if images.is_cuda and device.type == 'cuda':\n    pass\n")) == []
