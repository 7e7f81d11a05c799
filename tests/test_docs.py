"""The generated API reference covers every ``__all__`` of the package (docs/_ext/pillargraph_docs.py).

These tests run the page generator without Sphinx's build; the full build is
``make -C docs html`` (warnings are errors), which CI runs.
"""
import importlib
import inspect
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("sphinx")

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
gen = importlib.import_module("pillargraph_docs")
sys.path.remove(str(DOCS / "_ext"))

PKG_DIR = Path(__file__).resolve().parents[1] / "pillargraph"


def reference_alls():
    """Plain reference: every public module file on disk and its ``__all__``."""
    out = {}
    for path in sorted(PKG_DIR.rglob("*.py")):
        parts = path.relative_to(PKG_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__" or any(p.startswith("_") for p in parts):
            continue
        name = ".".join(parts)
        out[name] = list(getattr(importlib.import_module(name), "__all__", None) or [])
    return out


@pytest.fixture(scope="module")
def pages():
    return gen.api_pages()


def test_every_public_module_is_a_section(pages):
    sections = [s.module for p in pages for s in p.sections]
    assert sorted(sections) == sorted(reference_alls())
    assert len(sections) == len(set(sections))


def test_every_all_name_is_listed_on_its_module_section(pages):
    listed = {s.module: [e.name for e in s.entries] for p in pages for s in p.sections}
    for module, names in reference_alls().items():
        assert listed[module] == names, module
    rendered = {p.module: gen.render_page(p) for p in pages}
    for p in pages:
        for s in p.sections:
            for e in s.entries:
                short = e.canonical[len(s.module) + 1:] if e.canonical.startswith(s.module + ".") else None
                assert (f"~{e.canonical}" in rendered[p.module]
                        or (short is not None and f"   {short}\n" in rendered[p.module])), (s.module, e.name)


def test_every_class_and_function_is_documented_exactly_once(pages):
    documented = Counter()
    objects = {}
    for p in pages:
        for s in p.sections:
            mod = importlib.import_module(s.module)
            for e in s.entries:
                obj = getattr(mod, e.name)
                objects[e.canonical] = obj
                if e.documented_here:
                    documented[e.canonical] += 1
                    directive = {"class": ("autoclass", "autoexception"), "function": ("autofunction",),
                                 "data": ("py:data",)}[e.kind]
                    text = gen.render_page(p)
                    target = e.canonical if e.kind != "data" else e.name
                    assert any(f".. {d}:: {target}" in text for d in directive), e.canonical
    for module, names in reference_alls().items():
        mod = importlib.import_module(module)
        for n in names:
            obj = getattr(mod, n)
            if inspect.ismodule(obj):
                continue
            # the canonical name is importable and is the same object
            canon = next(e.canonical for p in pages for s in p.sections if s.module == module
                         for e in s.entries if e.name == n)
            assert documented[canon] == 1, canon
            home, attr = canon.rsplit(".", 1)
            assert getattr(importlib.import_module(home), attr) is obj, canon


def test_canonical_name_is_the_shallowest_subpackage(pages):
    names = gen.canonical_names(pages)
    assert names[("pillargraph", "NeighborAttentionConv")] == "pillargraph.nn.NeighborAttentionConv"
    assert names[("pillargraph.nn.conv", "NeighborAttentionConv")] == "pillargraph.nn.NeighborAttentionConv"
    assert names[("pillargraph.graphs", "GraphBatch")] == "pillargraph.graphs.GraphBatch"
    assert names[("pillargraph", "SimilarityBundle")] == "pillargraph.bundle.SimilarityBundle"
    # constants re-exported elsewhere are documented where they are assigned
    assert names[("pillargraph.graphs", "IMAGE")] == "pillargraph.modality.IMAGE"


def test_index_lists_every_page(pages):
    index = gen.render_index(pages)
    for p in pages:
        assert f"\n   {p.module}\n" in index


def test_a_new_name_in_an_all_needs_no_doc_edit(monkeypatch):
    import pillargraph.graphs as graphs

    class BrandNewThing:
        """A class added to an ``__all__``."""

    BrandNewThing.__module__ = "pillargraph.graphs.brand_new"
    monkeypatch.setattr(graphs, "BrandNewThing", BrandNewThing, raising=False)
    monkeypatch.setattr(graphs, "__all__", graphs.__all__ + ["BrandNewThing"])
    page = next(p for p in gen.api_pages() if p.module == "pillargraph.graphs")
    text = gen.render_page(page)
    assert ".. autoclass:: pillargraph.graphs.BrandNewThing" in text
    assert "   BrandNewThing\n" in text


def test_a_name_missing_from_its_module_is_an_error(monkeypatch):
    import pillargraph.graphs as graphs

    monkeypatch.setattr(graphs, "__all__", graphs.__all__ + ["NoSuchName"])
    with pytest.raises(ValueError, match="NoSuchName"):
        gen.api_pages()


def test_results_pages_follow_the_results_folder(tmp_path):
    src, out = tmp_path / "results", tmp_path / "out"
    assert gen.results_pages(src, out) == ["none"]
    src.mkdir()
    (src / "b.md").write_text("# Title\n\n## Sub\n\n```\n# code\n```\n| a |\n|---|\n| 1 |\n")
    (src / "a.txt").write_text("speed 1 ms\n")
    (src / "plot.png").write_bytes(b"\x89PNG")
    assert gen.results_pages(src, out) == ["a_txt", "b"]
    md = (out / "b.md").read_text()
    assert md.startswith("# b\n")
    assert "\n## Title\n" in md and "\n### Sub\n" in md and "\n# code\n" in md
    assert "literalinclude:: a.txt" in (out / "a_txt.rst").read_text()
    assert (out / "plot.png").exists() and not (out / "none.rst").exists()
    (src / "a.txt").unlink()
    assert gen.results_pages(src, out) == ["b"]
    assert not (out / "a_txt.rst").exists()


def test_baselines_table_lists_every_registered_method():
    from pillargraph.baselines import available_rerankers

    table = gen.baselines_table()
    for name in available_rerankers():
        assert f"``{name}``" in table


def test_cli_page_has_every_command():
    from pillargraph.cli import COMMANDS

    page = gen.cli_page()
    for name in COMMANDS:
        assert f"pillargraph {name}\n" in page
