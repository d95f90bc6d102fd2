"""The import graph: every arrow points down the layers, and no import cycle.

Layers, top to bottom (docs/architecture.md draws them)::

    front ends   qga_libvirt.cli, mcp_server, tooling (docs, tiny guests, testing)
    facade       qga_libvirt (the package's __init__: the public API)
    fleet        qga_libvirt.fleet
    client       qga_libvirt.client
    operations   qga_libvirt.operations
    plumbing     qga_libvirt.commands, qga_libvirt.transports, qga_libvirt.discovery
    ground       qga_libvirt.protocol, .models, .errors, .wire, .metadata

A module may import from its own layer or any layer below. Every import counts: at
module level and inside functions (a function-level import is an arrow all the same,
only a later one). Imports under ``if TYPE_CHECKING:`` never run, so they are left out
of the cycle check, but they follow the layers like the others: a type a lower layer
names must live at or below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qga_libvirt", "mcp_server")

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "front ends",
        (
            "qga_libvirt.cli",
            "mcp_server",
            "qga_libvirt.testing",
        ),
    ),
    ("facade", ("qga_libvirt",)),
    ("fleet", ("qga_libvirt.fleet",)),
    ("client", ("qga_libvirt.client", "qga_libvirt.async_client")),
    ("operations", ("qga_libvirt.operations",)),
    ("core", ("qga_libvirt.core",)),
    (
        "plumbing",
        (
            "qga_libvirt.commands",
            "qga_libvirt.transports",
            "qga_libvirt.discovery",
            "qga_libvirt.steps",
        ),
    ),
    (
        "ground",
        (
            "qga_libvirt.protocol",
            "qga_libvirt.models",
            "qga_libvirt.errors",
            "qga_libvirt.wire",
            "qga_libvirt.metadata",
            "qga_libvirt.quiet",
            "qga_libvirt.enums",
        ),
    ),
]

# Known upward arrows, each to be removed by the change named; the test fails when one
# is gone (so that this list only shrinks) and for any arrow not listed.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours an import statement loads (a submodule when it names one)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        if node.level:
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        names = [
            f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
            for alias in node.names
        ]
    return [name for name in names if name.split(".")[0] in PACKAGES]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges() -> set[tuple[str, str, bool]]:
    """(importer, imported, whether only for type checking) for every import of ours."""
    edges: set[tuple[str, str, bool]] = set()
    for module, path in MODULES.items():
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, typing_only: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(module, is_package, child):  # noqa: B023
                        edges.add((module, target, typing_only))  # noqa: B023
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for inner in child.body:
                        visit(ast.Module(body=[inner], type_ignores=[]), True)
                    for inner in child.orelse:
                        visit(ast.Module(body=[inner], type_ignores=[]), typing_only)
                else:
                    visit(child, typing_only)

        visit(ast.parse(path.read_text(), str(path)), False)
    return {(a, b, t) for a, b, t in edges if a != b}


EDGES = _edges()


def layer(module: str) -> int:
    """The module's layer, 0 at the top; the longest matching prefix decides."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in {__name__}")
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_the_graph_is_read() -> None:
    # Guards the reader itself: arrows known to exist are found, of each kind.
    assert ("qga_libvirt.fleet", "qga_libvirt.client", False) in EDGES
    assert ("qga_libvirt.client", "qga_libvirt.transports.domain", False) in EDGES  # in a def
    assert ("qga_libvirt.client", "qga_libvirt.transports.domain", True) in EDGES  # typing
    assert ("qga_libvirt.transports.domain", "qga_libvirt.transports.libvirt", False) in EDGES


def test_arrows_point_down() -> None:
    upward = {
        (importer, imported) for importer, imported, _ in EDGES if layer(imported) < layer(importer)
    }
    names = [name for name, _ in LAYERS]
    unexpected = sorted(upward - ALLOWED_UPWARD.keys())
    assert not unexpected, "\n".join(
        f"{a} ({names[layer(a)]}) imports {b} ({names[layer(b)]}), a layer above it"
        for a, b in unexpected
    )
    gone = sorted(ALLOWED_UPWARD.keys() - upward)
    assert not gone, f"no longer imported, remove from ALLOWED_UPWARD: {gone}"


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for importer, imported, typing_only in EDGES:
        if not typing_only and (importer, imported) not in ALLOWED_UPWARD:
            graph[importer].add(imported)
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found
