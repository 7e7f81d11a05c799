"""benchmarks/results/README.md lists every results file, and no results file records a machine's path."""
import re

from benchmarks import results_index as ri


def test_every_results_file_has_a_line_in_the_index():
    assert ri.undescribed() == [], "add these stems to benchmarks/results_index.DESCRIPTIONS"
    committed = (ri.RESULTS / ri.INDEX).read_text()
    for stem in ri.stems():
        assert f"`{stem}`" in committed, f"{stem} is missing from {ri.INDEX}: run benchmarks/results_index.py"


def test_an_undescribed_file_is_reported(tmp_path):
    (tmp_path / "mystery.md").write_text("Command: `python x.py`\n")
    assert ri.undescribed(tmp_path) == ["mystery"]
    assert ri.recorded_command(ri.stems(tmp_path)["mystery"]) == "python x.py"


def test_results_files_record_no_absolute_machine_paths():
    machine = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users)/")
    offenders = [p.name for p in ri.RESULTS.iterdir()
                 if p.suffix in (".md", ".json", ".jsonl", ".txt") and machine.search(p.read_text(errors="replace"))]
    assert offenders == []
