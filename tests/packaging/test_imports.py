"""No import cycles: neither between the five distributions nor between modules.

The graph is read with :mod:`ast` from the sources (nothing is imported), over
every ``.py`` file of ``proto/ native/ clients/ server/ ha/`` except the
generated ones (``*_pb2*.py``, ``parkgate/v1/__init__.py``,
``parkgate/common/reason.py``). An edge is an ``import`` anywhere in a module:
at module level or inside a function (a lazy import is still a dependency),
but not under ``if TYPE_CHECKING:`` for the module graph. Resolution:

* relative imports are made absolute;
* ``import a.b.c`` is an edge to ``a.b.c`` only: the parent packages Python
  imports on the way (``a``, ``a.b``) are not edges of this module;
* ``from p import name`` is an edge to ``p.name`` when that is a module, else
  to ``p`` (its ``__init__``): so ``from . import sibling`` depends on the
  sibling, not on the package it sits in;
* a package is one node, its ``__init__.py``.

Distributions (folders) may only depend downwards: native -> proto,
clients -> proto/native, server -> proto/native, ha -> proto/native/server.
The clients never import the server or HA code (a gate box does not have it),
even lazily or for type checking.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("proto", "native", "clients", "server", "ha")
# Which folder each top-level package of the namespace ``parkgate`` lives in.
PACKAGE_FOLDER = {"v1": "proto", "common": "proto", "native": "native", "rules": "native",
                  "clients": "clients", "server": "server", "ha": "ha"}
ALLOWED = {
    "proto": set(),
    "native": {"proto"},
    "clients": {"proto", "native"},
    "server": {"proto", "native"},
    "ha": {"proto", "native", "server"},
}
GENERATED = {"parkgate.v1", "parkgate.common.reason"}  # plus parkgate.v1.*_pb2, *_pb2_grpc


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the absolute name imported (module, or package whose attribute is taken)
    file: Path
    line: int
    type_checking: bool
    lazy: bool  # inside a function: runs when called, not at import

    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def _is_generated(name: str) -> bool:
    return name in GENERATED or (name.startswith("parkgate.v1.") and "_pb2" in name)


def _module_name(folder: str, path: Path) -> str:
    parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover() -> tuple[dict[str, Path], set[str]]:
    """The graph's modules (name -> file) and every module name that exists, generated ones included."""
    modules: dict[str, Path] = {}
    existing: set[str] = set()
    for folder in FOLDERS:
        base = REPO / folder / "parkgate"
        assert base.is_dir(), f"{base} is missing: the layout is proto/ native/ clients/ server/ ha/"
        for path in sorted(base.rglob("*.py")):
            if any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in path.parts):
                continue
            name = _module_name(folder, path)
            existing.add(name)
            if not _is_generated(name):
                assert name not in modules, f"{name} is in both {modules[name]} and {path}"
                modules[name] = path
        # generated at build time: they may not exist in a fresh checkout, but they are modules
        for proto in (REPO / folder).rglob("*.proto"):
            stem = _module_name(folder, proto.with_name(proto.stem + "_pb2.py"))
            existing |= {stem, stem + "_grpc", stem.rpartition(".")[0]}
    existing |= GENERATED
    # namespace packages (no __init__.py): ``parkgate`` and any folder of modules
    for name in list(existing):
        parts = name.split(".")
        existing |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return modules, existing


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


ImportNode = ast.Import | ast.ImportFrom
_FUNCTIONS = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


def _import_nodes(tree: ast.AST, type_checking: bool = False,
                  lazy: bool = False) -> Iterator[tuple[ImportNode, bool, bool]]:
    """Every import statement, anywhere (functions, classes, try/except...): (node, TYPE_CHECKING-only, lazy)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_checking, lazy
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), True, lazy)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), type_checking, lazy)
        else:
            yield from _import_nodes(node, type_checking, lazy or isinstance(node, _FUNCTIONS))


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, existing: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node, type_checking, lazy in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, path, node.lineno, type_checking, lazy)
            continue
        if node.level:
            package = _package_of(module, path).split(".")
            if node.level - 1 > len(package) - 1:
                raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
            base_parts = package[: len(package) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            target = candidate if alias.name != "*" and candidate in existing else base
            yield Import(module, target, path, node.lineno, type_checking, lazy)


def folder_of_name(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "parkgate" or len(parts) < 2:
        return None
    return PACKAGE_FOLDER.get(parts[1], "unknown")


def all_imports() -> tuple[dict[str, Path], list[Import], set[str]]:
    modules, existing = discover()
    found = [imp for name, path in modules.items() for imp in imports_of(name, path, existing)]
    return modules, found, existing


def _node_for(target: str, modules: dict[str, Path], existing: set[str]) -> str | None:
    """The graph node an import lands on: the module itself, else the closest package that is a node."""
    if target in modules:
        return target
    if _is_generated(target):
        return None  # generated code imports only protobuf/grpc and other generated modules: a leaf
    parts = target.split(".")
    if parts[0] != "parkgate":
        return None
    if target in existing:
        return None  # a namespace package (no __init__ to run)
    while len(parts) > 1:  # `import parkgate.x.attr`-like names of something that is not a module
        parts.pop()
        name = ".".join(parts)
        if name in modules:
            return name
    return None


def module_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[Import]]]:
    modules, found, existing = all_imports()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    why: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in found:
        if imp.type_checking:
            continue
        target = _node_for(imp.target, modules, existing)
        if target is None or target == imp.source:
            continue
        graph[imp.source].add(target)
        why[(imp.source, target)].append(imp)
    return graph, why


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    return sorted(result)


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest chain start -> ... -> start inside one component (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                return [*reversed(chain), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def describe_cycles(graph: dict[str, set[str]], why: dict[tuple[str, str], list[Import]],
                    components: Iterable[list[str]]) -> str:
    lines: list[str] = []
    for component in components:
        members = set(component)
        lines.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        seen: set[frozenset[tuple[str, str]]] = set()
        for start in component:
            chain = shortest_cycle(graph, start, members)
            edges = frozenset(itertools.pairwise(chain))
            if edges in seen:
                continue
            seen.add(edges)
            lines.append("  " + " -> ".join(chain))
            for a, b in itertools.pairwise(chain):
                where = ", ".join(f"{i.where()}{' (lazy)' if i.lazy else ''}" for i in why[(a, b)])
                lines.append(f"      {a} -> {b}: {where}")
    return "\n".join(lines)


# -- the tests ----------------------------------------------------------------------------------------------


def test_the_graph_is_read() -> None:
    graph, _ = module_graph()
    for name in ("parkgate.common.cli", "parkgate.native", "parkgate.rules.engine",
                 "parkgate.clients.gate.agent", "parkgate.server", "parkgate.ha"):
        assert name in graph, f"{name} was not found: is the layout still proto/ native/ clients/ server/ ha/?"
    assert sum(len(targets) for targets in graph.values()) > 50


def test_no_forbidden_imports_between_distributions() -> None:
    _, found, _ = all_imports()
    forbidden: list[str] = []
    for imp in found:
        source_folder = folder_of_name(imp.source)
        target_folder = folder_of_name(imp.target)
        if target_folder is None or target_folder == source_folder:
            continue
        if target_folder == "unknown":
            forbidden.append(f"{imp.where()}: {imp.source} imports {imp.target}, in no distribution")
        elif target_folder not in ALLOWED[source_folder]:
            what = "for type checking only" if imp.type_checking else "at run time"
            forbidden.append(f"{imp.where()}: {source_folder}/ {imp.source} imports {target_folder}/ "
                             f"{imp.target} ({what})")
    assert not forbidden, "imports against the layering (" + ", ".join(
        f"{k} -> {'/'.join(sorted(v)) or 'nothing'}" for k, v in ALLOWED.items()) + "):\n" + "\n".join(forbidden)


def test_no_import_cycle_between_distributions() -> None:
    _, found, _ = all_imports()
    graph: dict[str, set[str]] = {folder: set() for folder in FOLDERS}
    why: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in found:
        a, b = folder_of_name(imp.source), folder_of_name(imp.target)
        if a is None or b is None or b == "unknown" or a == b:
            continue
        graph[a].add(b)
        why[(a, b)].append(imp)
    components = strongly_connected(graph)
    assert not components, "import cycles between distributions:\n" + "\n".join(
        f"  {' <-> '.join(c)}: " + "; ".join(f"{a}->{b} at {why[(a, b)][0].where()}"
                                             for a in c for b in c if (a, b) in why)
        for c in components)


def test_clients_never_import_server_or_ha() -> None:
    _, found, _ = all_imports()
    bad = [f"{imp.where()}: {imp.source} imports {imp.target}" for imp in found
           if imp.source.startswith("parkgate.clients") and folder_of_name(imp.target) in ("server", "ha")]
    assert not bad, "client code imports server/HA code (a gate box does not have it):\n" + "\n".join(bad)


def test_no_import_cycle_between_modules() -> None:
    graph, why = module_graph()
    components = strongly_connected(graph)
    assert not components, "import cycles between modules:\n" + describe_cycles(graph, why, components)


def test_cycle_finder_finds_cycles() -> None:
    # The finder itself: a -> b -> c -> a and d <-> e are cycles, f -> a is not part of one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]
    assert shortest_cycle(graph, "b", {"a", "b", "c"}) == ["b", "c", "a", "b"]
