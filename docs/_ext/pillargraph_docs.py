"""Sphinx pages generated from the package itself, so that the docs follow the code.

* :func:`api_pages` walks every public module of :mod:`pillargraph` and turns
  each ``__all__`` into API pages: one page per sub-package or first-level
  module, with a section per leaf module. Every exported class, function and
  constant is documented exactly once, at its *canonical* name (the shallowest
  sub-package that exports it, e.g. ``pillargraph.nn.NeighborAttentionConv``);
  every other ``__all__`` that exports it links there. Adding a name to an
  ``__all__`` therefore needs no doc edit.
* :func:`results_pages` copies the files of ``benchmarks/results/`` into the
  source tree (Markdown pages get a title, text files a literal include).
* :func:`baselines_table` lists the registered training-free re-rankers with
  their need flags, read from the classes.
* :func:`cli_page` prints ``--help`` of every sub-command.

Importable without Sphinx (``tests/test_docs.py`` checks :func:`api_pages`);
:func:`setup` registers the generation with Sphinx (``builder-inited``) and a
resolver that sends a reference to any re-exported name (``pillargraph.SimilarityBundle``,
``pillargraph.graphs.batch.GraphBatch``) to the place where it is documented.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

PACKAGE = "pillargraph"

#: Reading order of the API index (the pipeline); pages not named here follow under "Other".
GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("Top level", ("pillargraph",)),
    ("Data", ("pillargraph.bundle", "pillargraph.data", "pillargraph.io")),
    ("Pillars", ("pillargraph.pillars",)),
    ("Graphs", ("pillargraph.graphs",)),
    ("Networks", ("pillargraph.nn", "pillargraph.nn.conv")),
    ("Training", ("pillargraph.train", "pillargraph.losses")),
    ("Re-ranking", ("pillargraph.rerank",)),
    ("Metrics", ("pillargraph.metrics", "pillargraph.multi_positive")),
    ("Baselines", ("pillargraph.baselines", "pillargraph.compare")),
    ("Command line", ("pillargraph.cli",)),
    ("Shared definitions", ("pillargraph.modality", "pillargraph.version")),
)

KINDS = ("module", "class", "function", "data")


# --------------------------------------------------------------------------- discovery
def public_modules(package: str = PACKAGE) -> List[str]:
    """Names of every public module of ``package`` (no ``_private`` part, no ``__main__``), sorted."""
    root = importlib.import_module(package)
    out = [package]

    def walk(pkg: types.ModuleType) -> None:
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            if info.name.rsplit(".", 1)[1].startswith("_"):
                continue
            out.append(info.name)
            if info.ispkg:
                walk(importlib.import_module(info.name))

    walk(root)
    return sorted(out)


def kind_of(obj: Any) -> str:
    """``'module'``, ``'class'``, ``'function'`` or ``'data'``."""
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if inspect.isroutine(obj):
        return "function"
    return "data"


def _assigns(module: str, name: str) -> bool:
    """Whether ``module``'s source binds ``name`` by a top-level assignment or definition."""
    mod = importlib.import_module(module)
    try:
        tree = ast.parse(inspect.getsource(mod))
    except (OSError, TypeError):
        return False
    for node in tree.body:
        targets: list = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets.extend(t.elts)
            elif isinstance(t, ast.Name) and t.id == name:
                return True
    return False


@dataclass
class Entry:
    """One name of one ``__all__``: where it is listed and where it is documented."""

    module: str         # the module whose __all__ lists it
    name: str
    kind: str           # one of KINDS
    canonical: str      # full name under which it is documented (a module's own name for modules)
    doc: str = ""       # for data: its ``#:`` comment (reST)

    @property
    def summary(self) -> str:
        """The comment's first paragraph on one line (for summary tables)."""
        first = self.doc.split("\n\n", 1)[0]
        return " ".join(line.strip() for line in first.splitlines() if line.strip())

    @property
    def documented_here(self) -> bool:
        return self.kind != "module" and self.canonical == f"{self.module}.{self.name}"


@dataclass
class Section:
    """One module on a page: its docstring, its ``__all__`` and the names documented under it."""

    module: str
    entries: List[Entry] = field(default_factory=list)
    has_all: bool = True


@dataclass
class Page:
    """One API page (a sub-package or a first-level module) and its leaf-module sections."""

    module: str
    sections: List[Section] = field(default_factory=list)

    @property
    def docname(self) -> str:
        return self.module

    def names(self) -> List[Tuple[str, str]]:
        """Every ``(module, name)`` the page lists."""
        return [(s.module, e.name) for s in self.sections for e in s.entries]


def page_module(module: str, package: str = PACKAGE) -> str:
    """The page a module belongs to: itself for the package, sub-packages and first-level modules."""
    if module == package or module.count(".") == package.count(".") + 1:
        return module
    mod = importlib.import_module(module)
    if hasattr(mod, "__path__"):
        return module
    return module.rsplit(".", 1)[0]


def _key(name: str, obj: Any) -> tuple:
    # Constants are keyed by name too: equal small ints or strings are shared objects in CPython.
    kind = kind_of(obj)
    return (kind, id(obj)) if kind in ("class", "function", "module") else (kind, name, id(obj))


def _attr_comment(modules: Iterable[str], name: str, obj: Any) -> str:
    """The ``#:`` comment documenting ``name`` in the first of ``modules`` that binds it to ``obj``."""
    from sphinx.pycode import ModuleAnalyzer  # only needed for constants; sphinx is the docs extra

    for module in modules:
        mod = importlib.import_module(module)
        if getattr(mod, name, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except Exception:  # noqa: BLE001  (no source available: no comment)
            continue
        lines = docs.get(("", name))
        if lines and any(line.strip() for line in lines):
            return "\n".join(line.rstrip() for line in lines).strip("\n")
    return ""


def _all_modules(package: str) -> List[str]:
    """Every module of the package, private ones included (where constants may be defined)."""
    root = importlib.import_module(package)
    out = [package]
    for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda _: None):
        if info.name.endswith("__main__"):
            continue
        out.append(info.name)
    return out


def api_pages(package: str = PACKAGE) -> List[Page]:
    """The API pages of ``package``, built from every public module's ``__all__``.

    Raises:
        ValueError: a name in an ``__all__`` is not an attribute of its module.
    """
    modules = public_modules(package)
    alls: Dict[str, Optional[List[str]]] = {}
    exporters: Dict[tuple, List[str]] = {}
    objects: Dict[tuple, Any] = {}
    for m in modules:
        mod = importlib.import_module(m)
        names = getattr(mod, "__all__", None)
        alls[m] = list(names) if names is not None else None
        for n in names or ():
            if not hasattr(mod, n):
                raise ValueError(f"{m}.__all__: lists {n!r}, which the module does not define")
            obj = getattr(mod, n)
            k = _key(n, obj)
            exporters.setdefault(k, []).append(m)
            objects[k] = obj

    pages_set = {page_module(m, package) for m in modules}
    module_set = set(modules)

    def defines(m: str, n: str, obj: Any) -> bool:
        if kind_of(obj) in ("class", "function"):
            home = getattr(obj, "__module__", "") or ""
            return home == m or home.startswith(m + ".")
        return _assigns(m, n)

    canonical: Dict[tuple, str] = {}
    all_mods = None
    for k, exp in exporters.items():
        obj = objects[k]
        name = k[1] if k[0] == "data" else None
        if k[0] == "module":
            canonical[k] = obj.__name__
            continue
        # the attribute name under which it is exported (the same in every exporter for constants)
        n = name if name is not None else next(x for x in alls[exp[0]] if getattr(
            importlib.import_module(exp[0]), x) is obj)
        cands = [m for m in exp if m != package] or exp
        # a function named like a sibling module (baselines.alpha_qe) is documented in that module
        cands = [m for m in cands if f"{m}.{n}" not in module_set] or cands
        cands.sort(key=lambda m: (m not in pages_set, m.count("."), not defines(m, n, obj), m))
        canonical[k] = f"{cands[0]}.{n}"

    pages: Dict[str, Page] = {p: Page(p) for p in sorted(pages_set)}
    comments: Dict[tuple, str] = {}
    for m in modules:
        mod = importlib.import_module(m)
        section = Section(m, has_all=alls[m] is not None)
        for n in alls[m] or ():
            obj = getattr(mod, n)
            k = _key(n, obj)
            entry = Entry(m, n, kind_of(obj), canonical[k])
            if entry.kind == "data":
                if k not in comments:
                    if all_mods is None:
                        all_mods = _all_modules(package)
                    home = canonical[k].rsplit(".", 1)[0]
                    comments[k] = _attr_comment([home] + exporters[k] + all_mods, n, obj)
                entry.doc = comments[k]
            section.entries.append(entry)
        page = pages[page_module(m, package)]
        if m == page.module:
            page.sections.insert(0, section)
        else:
            page.sections.append(section)
    return [pages[p] for p in _ordered(list(pages))]


def _ordered(names: List[str]) -> List[str]:
    order = [m for _, group in GROUPS for m in group if m in names]
    return order + sorted(set(names) - set(order))


def canonical_names(pages: List[Page]) -> Dict[Tuple[str, str], str]:
    """``(module, name) -> canonical full name`` for every listed name."""
    return {(s.module, e.name): e.canonical for p in pages for s in p.sections for e in s.entries}


# --------------------------------------------------------------------------- rendering
def _title(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def _value(obj: Any) -> Optional[str]:
    text = repr(obj)
    return text if len(text) <= 100 and "\n" not in text else None


def _summary_tables(section: Section) -> List[str]:
    out: List[str] = []
    by_kind = {k: [e for e in section.entries if e.kind == k] for k in KINDS}
    titles = {"module": "Modules", "class": "Classes", "function": "Functions", "data": "Constants"}
    here = section.module + "."
    for kind in ("module", "class", "function"):
        if by_kind[kind]:
            out.append(f".. rubric:: {titles[kind]}\n")
            out.append(".. autosummary::\n   :nosignatures:\n")
            # autosummary wants names relative to the current module (set by automodule)
            out.extend(f"   {e.canonical[len(here):]}" if e.canonical.startswith(here)
                       else f"   ~{e.canonical}" for e in by_kind[kind])
            out.append("")
    if by_kind["data"]:
        out.append(f".. rubric:: {titles['data']}\n")
        out.append(".. list-table::\n   :widths: 35 65\n")
        for e in by_kind["data"]:
            out.append(f"   * - :py:data:`~{e.canonical}`")
            out.append(f"     - {e.summary or ''}".rstrip())
        out.append("")
    return out


def _details(section: Section) -> List[str]:
    out: List[str] = []
    mod = importlib.import_module(section.module)
    for e in section.entries:
        if not e.documented_here:
            continue
        obj = getattr(mod, e.name)
        if e.kind == "class":
            directive = "autoexception" if issubclass(obj, BaseException) else "autoclass"
            out += [f".. {directive}:: {e.canonical}", "   :members:", "   :special-members: __call__",
                    "   :show-inheritance:", ""]
        elif e.kind == "function":
            out += [f".. autofunction:: {e.canonical}", ""]
        else:
            out += [f".. py:data:: {e.name}", f"   :module: {section.module}"]
            value = _value(obj)
            if value is not None:
                out.append(f"   :value: {value}")
            body = e.doc.splitlines() if e.doc else ["(constant)"]
            out += [""] + [f"   {line}".rstrip() for line in body] + [""]
    return out


def render_page(page: Page) -> str:
    """reStructuredText of one API page."""
    out = [f".. This file is generated by docs/_ext/pillargraph_docs.py; do not edit.\n",
           _title(page.module, "=")]
    for i, section in enumerate(page.sections):
        if i > 0:
            out.append(_title(f"{section.module}", "-"))
        out.append(f".. automodule:: {section.module}\n")
        if not section.has_all:
            out.append("")
            continue
        out += _summary_tables(section)
        details = _details(section)
        if details:
            out.append(".. rubric:: Reference\n")
            out += details
    return "\n".join(out).rstrip() + "\n"


def render_index(pages: List[Page]) -> str:
    """The API index: one toctree per pipeline stage."""
    out = [".. This file is generated by docs/_ext/pillargraph_docs.py; do not edit.\n",
           _title("API reference", "="),
           "Generated from the ``__all__`` list of every public module: each exported class, "
           "function and constant is documented once, under the shallowest sub-package that "
           "exports it (e.g. ``pillargraph.nn.NeighborAttentionConv``); every other module that "
           "exports it links there.\n"]
    names = [p.module for p in pages]
    placed = set()
    for title, group in GROUPS + (("Other", tuple(sorted(set(names) - {m for _, g in GROUPS for m in g}))),):
        members = [m for m in group if m in names]
        if not members:
            continue
        placed.update(members)
        out.append(f".. toctree::\n   :caption: {title}\n   :maxdepth: 1\n")
        out += [f"   {m}" for m in members]
        out.append("")
    assert placed == set(names)
    return "\n".join(out)


def _write(path: Path, text: str, written: set) -> None:
    # Rewrite only on change, so that Sphinx's incremental build stays incremental.
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    written.add(path.resolve())


def _prune(folder: Path, written: set) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file() and p.resolve() not in written:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def write_api(outdir: Path, package: str = PACKAGE) -> List[Page]:
    """Write ``index.rst`` and one ``<module>.rst`` per page into ``outdir`` (stale files removed)."""
    outdir = Path(outdir)
    pages = api_pages(package)
    written: set = set()
    for page in pages:
        _write(outdir / f"{page.docname}.rst", render_page(page), written)
    _write(outdir / "index.rst", render_index(pages), written)
    _prune(outdir, written)
    return pages


# --------------------------------------------------------------------------- results
def _demote_headings(markdown: str) -> str:
    """One level deeper for every ATX heading outside code fences (the page title is level 1)."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = None if fence == mark else (fence or mark)
        elif fence is None and stripped.startswith("#") and stripped.lstrip("#").startswith(" "):
            line = "#" + stripped
        out.append(line)
    return "\n".join(out) + "\n"


def results_pages(results_dir: Path, outdir: Path) -> List[str]:
    """Copy ``results_dir`` into ``outdir`` as pages: Markdown with a title, text as literal blocks.

    Images and other files are copied alongside so that relative links in the
    Markdown keep working. Returns the page names written, sorted.
    """
    results_dir, outdir = Path(results_dir), Path(outdir)
    written: set = set()
    pages = []
    files = sorted(p for p in results_dir.rglob("*") if p.is_file()) if results_dir.is_dir() else []
    for src in files:
        rel = src.relative_to(results_dir)
        if src.suffix == ".md":
            body = src.read_text(encoding="utf-8")
            text = (f"# {rel.with_suffix('').as_posix()}\n\n"
                    f"*From* `benchmarks/results/{rel.as_posix()}`.\n\n" + _demote_headings(body))
            _write(outdir / rel, text, written)
            pages.append(rel.with_suffix("").as_posix())
        elif src.suffix in (".txt", ".log"):
            dst = outdir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.add(dst.resolve())
            page = rel.with_name(rel.name.replace(".", "_")).with_suffix(".rst")
            title = rel.as_posix()
            _write(outdir / page, f"{_title(title, '=')}\n.. literalinclude:: {rel.name}\n   :language: text\n",
                   written)
            pages.append(page.with_suffix("").as_posix())
        else:
            dst = outdir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.add(dst.resolve())
    if not pages:
        _write(outdir / "none.rst", _title("No results yet", "=") + "\nNothing in ``benchmarks/results/``.\n",
               written)
        pages.append("none")
    if outdir.exists():
        _prune(outdir, written)
    return sorted(pages)


# --------------------------------------------------------------------------- baselines, CLI
def baselines_table() -> str:
    """A list-table of every registered training-free re-ranker and its need flags."""
    from pillargraph.baselines import available_rerankers

    flags = (("needs_intra", "intra"), ("needs_bank", "bank"), ("needs_embeddings", "embeddings"),
             ("transductive", "transductive"))
    out = [".. list-table::", "   :header-rows: 1", "",
           "   * - name", "     - class"] + [f"     - {label}" for _, label in flags]
    for name, cls in sorted(available_rerankers().items()):
        out.append(f"   * - ``{name}``")
        out.append(f"     - :class:`~{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}`")
        out += [f"     - {'yes' if getattr(cls, attr, False) else '-'}" for attr, _ in flags]
    return "\n".join(out) + "\n"


def recipes_table() -> str:
    """A list-table of every training recipe: what it reads at test time, its episodes and its settings."""
    from pillargraph.train import RECIPES

    out = [".. list-table::", "   :header-rows: 1", "   :widths: 12 22 14 52", "",
           "   * - recipe", "     - reads at test time", "     - trains on", "     - settings"]
    for r in RECIPES.values():
        episodes = (f"episodes of {', '.join(map(str, r.episode_images))} images" if r.episode_images
                    else "the whole split")
        settings = "; ".join(f"``{k}={v!r}``" for part in (r.builder, r.model, r.train) for k, v in part.items())
        out += [f"   * - ``{r.name}``", f"     - {r.reads}", f"     - {episodes}", f"     - {settings}"]
    return "\n".join(out) + "\n"


def cli_page() -> str:
    """``--help`` of ``pillargraph`` and every sub-command, as literal blocks."""
    import argparse

    from pillargraph.cli import build_parser

    parser = build_parser()
    out = [".. This file is generated by docs/_ext/pillargraph_docs.py; do not edit.\n"]

    def block(text: str) -> List[str]:
        return [".. code-block:: text", ""] + [f"   {line}".rstrip() for line in text.splitlines()] + [""]

    out += block(parser.format_help())
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        out.append(_title(f"pillargraph {name}", "-"))
        out += block(sub.format_help())
    return "\n".join(out)


# --------------------------------------------------------------------------- Sphinx hooks
def generate(srcdir: Path) -> None:
    """Write every generated file under ``srcdir`` (the docs folder)."""
    srcdir = Path(srcdir)
    repo = srcdir.parent
    write_api(srcdir / "api" / "generated")
    gen = srcdir / "generated"
    written: set = set()
    _write(gen / "baselines_table.rst", baselines_table(), written)
    _write(gen / "cli.rst", cli_page(), written)
    _write(gen / "recipes_table.rst", recipes_table(), written)
    results_pages(repo / "benchmarks" / "results", gen / "results")


def _on_builder_inited(app) -> None:
    generate(Path(app.srcdir))


_CANONICAL: Optional[Dict[int, str]] = None
_SHORT: Dict[str, List[str]] = {}


def _index() -> Dict[int, str]:
    global _CANONICAL
    if _CANONICAL is None:
        _CANONICAL = {}
        for p in api_pages():
            for s in p.sections:
                mod = importlib.import_module(s.module)
                for e in s.entries:
                    if not e.documented_here:
                        continue
                    if e.kind in ("class", "function"):
                        _CANONICAL[id(getattr(mod, e.name))] = e.canonical
                    _SHORT.setdefault(e.name, []).append(e.canonical)
    return _CANONICAL


def _lookup(target: str) -> Optional[List[str]]:
    """Candidate documented names for ``target``, most specific first, or ``None``."""
    index = _index()
    parts = target.split(".")
    if parts[0] == PACKAGE and len(parts) > 1:
        found = _lookup_path(parts, index)
        if found is not None:
            return found
        parts = parts[-1:]  # e.g. ``pillargraph.data.X`` where X lives in a sub-module
    if parts[0] != PACKAGE:
        # a short name such as ``Reranker`` or ``Reranker.__call__``, used from another module
        homes = _SHORT.get(parts[0], [])
        if len(homes) != 1:
            return None
        return [".".join([homes[0]] + parts[1:j]) for j in range(len(parts), 0, -1)]
    return None


def _lookup_path(parts: List[str], index: Dict[int, str]) -> Optional[List[str]]:
    for i in range(len(parts), 0, -1):  # longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        rest = parts[i:]
        break
    else:
        return None
    for j, attr in enumerate(rest):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
        if id(obj) in index:
            tail = rest[j + 1:]
            # the member itself, else its owner (e.g. an undocumented dataclass field)
            return [".".join([index[id(obj)]] + tail[:k]) for k in range(len(tail), -1, -1)]
    return None


def _resolve_reexport(app, env, node, contnode):
    """Send references to re-exported or short names to where the object is documented."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = _lookup(target) if target else None
    if not candidates:
        return None
    domain = env.get_domain("py")
    for new in candidates:
        if new == target:
            continue
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], new, node, contnode)
        if found is None and node["reftype"] != "obj":
            found = domain.resolve_xref(env, node["refdoc"], app.builder, "obj", new, node, contnode)
        if found is not None:
            return found
    return None


def setup(app) -> Dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    app.connect("missing-reference", _resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
