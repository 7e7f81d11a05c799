"""benchmarks/ as a small package: short files, no private names across modules, and every script's --help
says what it measures and about how long it takes (issue 21)."""
import ast
from pathlib import Path

import pytest

from benchmarks.common import description

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FILES = sorted(BENCHMARKS.glob("*.py"))


def test_there_are_benchmarks():
    assert len(FILES) > 10


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_benchmark_file_is_under_500_lines(path):
    assert len(path.read_text().splitlines()) < 500


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_private_names_are_imported_from_other_benchmarks(path):
    tree = ast.parse(path.read_text())
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
        "benchmarks") for a in n.names if a.name.startswith("_")]
    assert private == []


@pytest.mark.parametrize("path", [p for p in FILES if "__main__" in p.read_text()], ids=lambda p: p.name)
def test_every_script_help_says_what_it_measures_and_how_long(path):
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    text = description(doc)
    summary, time_par = text.split("\n\n")
    assert summary and time_par.startswith("Time:")
    assert any(w in time_par for w in ("minute", "second", "hour")), time_par


def test_description_takes_the_first_paragraph_and_the_time_paragraph():
    doc = "What it measures,\nover two lines.\n\nDetails.\n\nTime: about :func:`x` ``2`` minutes.\n"
    assert description(doc) == "What it measures, over two lines.\n\nTime: about x 2 minutes."
    with pytest.raises(ValueError, match="Time:"):
        description("Only a summary.\n\nAnd details.")
