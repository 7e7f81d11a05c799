"""The package's layering, declared once here and read from the imports (docs/index.rst, "Layers").

Every module of ``pillargraph/`` is parsed with :mod:`ast`; every import in it, at module level or
inside a function, absolute or relative, is resolved to the module it loads. The tests fail, naming
the module, the line and the import, when

* an import goes up :data:`LAYERS` (to a later tier), or sideways to another layer of the same tier
  (layers of one tier stand beside each other and do not import each other);
* modules import each other in a cycle (at any depth, within one layer too);
* a private name (leading underscore) is imported from another module, or read as ``alias._name``
  off an imported module; or a private module is imported from outside the package that directly
  contains it (``baselines/_chunks.py`` serves the modules of ``pillargraph.baselines``,
  ``losses/_lists.py`` those of ``pillargraph.losses``).

The implicit import of a module's parent packages is not an edge: only what a module names.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest

PKG_DIR = Path(__file__).resolve().parents[1] / "pillargraph"

#: The layers, lowest tier first. A module may import from its own layer and from any earlier
#: tier; the layers inside one tier stand beside each other. A layer is a list of modules or
#: packages (a package takes in all its sub-modules).
LAYERS: Tuple[Tuple[Tuple[str, Tuple[str, ...]], ...], ...] = (
    (("foundation", ("pillargraph.version", "pillargraph.openmp", "pillargraph.io", "pillargraph.device",
                     "pillargraph.modality", "pillargraph.bundle", "pillargraph.testing")),),
    (("metrics", ("pillargraph.metrics", "pillargraph.multi_positive")),),
    (("data", ("pillargraph.data",)),),
    (("pillars", ("pillargraph.pillars",)),
     ("baselines", ("pillargraph.baselines",))),
    (("graphs", ("pillargraph.graphs",)),),
    (("nn", ("pillargraph.nn",)),
     ("losses", ("pillargraph.losses",))),
    (("rerank", ("pillargraph.rerank", "pillargraph.written_ranks")),),
    (("train", ("pillargraph.train",)),
     ("shard", ("pillargraph.shard",)),
     ("compare", ("pillargraph.compare",))),
    (("cli", ("pillargraph.cli",)),),
    (("package", ("pillargraph", "pillargraph.__main__")),),
)


def module_files() -> Dict[str, Tuple[Path, bool]]:
    """``{module name: (file, is a package)}`` of every module under ``pillargraph/``."""
    out = {}
    for path in sorted(PKG_DIR.rglob("*.py")):
        parts = list(path.relative_to(PKG_DIR.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = module_files()


def layer_of(module: str) -> Tuple[int, str]:
    """``(tier, layer name)`` of a module: the layer naming it or its closest package."""
    best: Optional[Tuple[int, int, str]] = None
    for tier, layers in enumerate(LAYERS):
        for name, prefixes in layers:
            for p in prefixes:
                if (module == p or (module.startswith(p + ".") and p != "pillargraph")) \
                        and (best is None or len(p) > best[0]):
                    best = (len(p), tier, name)
    if best is None:
        raise KeyError(f"{module} is in no layer of tests/test_layering.py LAYERS")
    return best[1], best[2]


class Import(NamedTuple):
    module: str            # the importing module
    line: int
    target: str            # the module loaded
    name: Optional[str]    # the name taken from it (None: the module itself)

    def __str__(self) -> str:
        what = self.target if self.name is None else f"{self.target} import {self.name}"
        return f"{self.module} (line {self.line}): {what}"


def imports_of(module: str) -> Iterator[Import]:
    """Every import of a pillargraph module by ``module``, function-level ones included."""
    path, is_pkg = MODULES[module]
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pillargraph" or alias.name.startswith("pillargraph."):
                    yield Import(module, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != "pillargraph" and not source.startswith("pillargraph."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # `from . import metrics`: the sub-module itself
                    yield Import(module, node.lineno, sub, None)
                else:
                    yield Import(module, node.lineno, source, alias.name)


ALL_IMPORTS: List[Import] = [imp for m in MODULES for imp in imports_of(m)]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_only_go_down_the_layers():
    bad = []
    for imp in ALL_IMPORTS:
        (t_from, l_from), (t_to, l_to) = layer_of(imp.module), layer_of(imp.target)
        if t_to > t_from or (t_to == t_from and l_to != l_from):
            bad.append(f"{imp}  [{l_from} -> {l_to}]")
    assert not bad, "imports up or across the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph: Dict[str, set] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if imp.target != imp.module:
            graph[imp.module].add(imp.target)
    # Tarjan's strongly connected components
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: set = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    lines = []
    for comp in cycles:
        members = set(comp)
        edges = [str(imp) for imp in ALL_IMPORTS if imp.module in members and imp.target in members]
        lines.append(" <-> ".join(comp) + ":\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def test_no_private_names_across_modules():
    bad = []
    for imp in ALL_IMPORTS:
        if imp.target == imp.module:
            continue
        if imp.name is not None and _private(imp.name):
            bad.append(f"{imp}  [private name]")
        private_parts = [i for i, p in enumerate(imp.target.split(".")) if _private(p)]
        if private_parts:
            owner = ".".join(imp.target.split(".")[:private_parts[0]])
            importer_pkg = imp.module if MODULES[imp.module][1] else imp.module.rpartition(".")[0]
            if importer_pkg != owner:
                bad.append(f"{imp}  [private module used outside {owner}]")
    bad += private_attributes()
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def private_attributes() -> List[str]:
    """``alias._name`` where ``alias`` is another pillargraph module bound by an import."""
    bad = []
    for module, (path, is_pkg) in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        package = module if is_pkg else module.rpartition(".")[0]
        aliases: Dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{source}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in MODULES:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr) and aliases[node.value.id] != module):
                bad.append(f"{module} (line {node.lineno}): {aliases[node.value.id]}.{node.attr}  [private name]")
    return bad


@pytest.mark.parametrize("src, dst", [("pillargraph.graphs.priors", "pillargraph.nn"),
                                      ("pillargraph.baselines.dba", "pillargraph.graphs"),
                                      ("pillargraph.metrics", "pillargraph.data.neighbors"),
                                      ("pillargraph.rerank", "pillargraph.train.fit")])
def test_the_rule_catches_an_upward_import(src, dst):
    # the check itself: a made-up import of a higher layer is flagged
    (t_from, l_from), (t_to, l_to) = layer_of(src), layer_of(dst)
    assert t_to > t_from or (t_to == t_from and l_to != l_from)
