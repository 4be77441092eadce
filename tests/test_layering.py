"""Imports flow one way (DESIGN.md): frontend -> ir, codegen -> ir, runtime -> ir and codegen,
shipei -> all; `ir` imports no framework; and no two modules import each other, directly or
around a loop, at module level or inside a function (an import deferred into a function is a
cycle all the same). Imports under `if TYPE_CHECKING:` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: import name -> folder, as pyproject.toml maps them
PACKAGES = {"shipei": "shipei", "shipei.testing": "shipei/testing", "shipei.frontend": "frontend",
            "shipei.ir": "ir", "shipei.ir.ops": "ir/ops", "shipei.ir.passes": "ir/passes",
            "shipei.codegen": "codegen", "shipei.runtime": "runtime"}
LAYERS = {"shipei.frontend": {"shipei.ir"}, "shipei.ir": set(), "shipei.codegen": {"shipei.ir"},
          "shipei.runtime": {"shipei.ir", "shipei.codegen"}}
FRAMEWORKS = {"torch", "jax", "jaxlib", "tensorflow", "mindspore", "ray"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def _annotation_only(tree: ast.Module) -> set[ast.AST]:
    return {sub for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The project modules and the outside packages that module `name` imports."""
    tree = ast.parse(path.read_text())
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    skip = _annotation_only(tree)
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            if target.startswith("shipei"):
                inside |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
            else:
                outside.add(target.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    inside.add(alias.name)
                else:
                    outside.add(alias.name.split(".")[0])
    return {m for m in inside if m in modules and m != name}, outside


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    edges, outside = {}, {}
    for name, path in modules.items():
        edges[name], outside[name] = _imports(name, path, modules)
    return edges, outside


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return None


def _layer(module: str) -> str:
    return next((layer for layer in sorted(LAYERS, key=len, reverse=True) if module.startswith(layer)), "shipei")


def test_no_module_imports_itself_around_a_loop() -> None:
    edges, _ = _graph()
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    edges, _ = _graph()
    wrong = {(m, i) for m, imports in edges.items() if _layer(m) == layer
             for i in imports if _layer(i) != layer and _layer(i) not in LAYERS[layer]}
    assert not wrong, sorted(wrong)


def test_the_ir_imports_no_framework() -> None:
    _, outside = _graph()
    wrong = {(m, p) for m, packages in outside.items() if _layer(m) == "shipei.ir" for p in packages & FRAMEWORKS}
    assert not wrong, sorted(wrong)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
