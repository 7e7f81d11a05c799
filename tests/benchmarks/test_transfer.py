"""benchmarks/transfer.py: the pure pieces (gain matrices, the transfer summary, the report, the heat map, the
argument checks) on made-up numbers; no model is trained and no caption is read."""
import pytest

from benchmarks import transfer
from benchmarks.common import PROXY_NOTE

COMBOS = ["tfidf:minilm", "bm25:minilm", "lsa:minilm"]
BASES = {"tfidf:minilm": 300.0, "bm25:minilm": 320.0, "lsa:minilm": 230.0}
# gain[source][target], in-domain on the diagonal
GAIN = [[10.0, 6.0, 8.0],
        [7.0, 12.0, 5.0],
        [-1.0, 9.0, 8.0]]


def fake_cells(seeds=(0, 1)):
    cells = []
    for i, a in enumerate(COMBOS):
        for j, b in enumerate(COMBOS):
            for s in seeds:
                g = GAIN[i][j] + (0.5 if s else -0.5)  # the seeds straddle the mean
                cells.append({"recipe": "inductive", "seed": s, "source": a, "target": b, "learned": BASES[b] - 3,
                              "own": BASES[b] + g, "target_dev": BASES[b] + g + 1})
    return cells


def test_transfer_summary_counts_cells_and_compares_means():
    s = transfer.transfer_summary(GAIN)
    assert (s["off_diagonal_above_base"], s["off_diagonal_cells"]) == (5, 6)
    assert s["mean_in_domain_gain"] == pytest.approx(10.0)
    assert s["mean_off_diagonal_gain"] == pytest.approx(34.0 / 6)
    assert s["ratio_pct"] == pytest.approx(100 * (34.0 / 6) / 10.0)
    # per target column: mean of the other sources over its in-domain gain
    assert s["per_target_ratio_pct"] == pytest.approx([100 * 3.0 / 10, 100 * 7.5 / 12, 100 * 6.5 / 8])
    assert not s["targets_met"]  # one cell below the base, and 57% < 70%
    good = transfer.transfer_summary([[10.0, 8.0], [9.0, 10.0]])
    assert good["targets_met"] and good["ratio_pct"] == pytest.approx(85.0)
    assert "2/2" in transfer.summary_line(good) and "85%" in transfer.summary_line(good)


def test_transfer_summary_without_an_in_domain_gain_and_bad_shapes():
    s = transfer.transfer_summary([[0.0, 1.0], [2.0, -1.0]])
    assert s["ratio_pct"] is None and s["per_target_ratio_pct"] == [None, None] and not s["targets_met"]
    assert "n/a" in transfer.summary_line(s)
    with pytest.raises(ValueError, match="square matrix of at least 2"):
        transfer.transfer_summary([[1.0]])
    with pytest.raises(ValueError, match="square"):
        transfer.transfer_summary([[1.0, 2.0], [3.0]])


def test_gain_matrix_is_the_seed_mean_over_the_target_base():
    mean, std = transfer.gain_matrix(fake_cells(), COMBOS, BASES, "inductive", "own")
    assert mean == [[pytest.approx(g) for g in row] for row in GAIN]
    assert all(s == pytest.approx(0.7071, abs=1e-3) for row in std for s in row)  # sample std of +-0.5
    dev, _ = transfer.gain_matrix(fake_cells(), COMBOS, BASES, "inductive", "target_dev")
    assert dev[0][0] == pytest.approx(11.0)
    missing, _ = transfer.gain_matrix(fake_cells(), COMBOS, BASES, "paper", "own")
    assert missing == [[None] * 3] * 3


def payload(cells, recipes=("inductive",), limit=None):
    config = {"combos": COMBOS, "recipes": list(recipes), "seeds": [0, 1], "train_images": 200, "epochs": 1,
              "limit": limit}
    p = {"command": "python benchmarks/transfer.py --limit 200", "note": PROXY_NOTE, "config": config,
         "base_rsum": BASES, "cells": cells, "models": {}}
    p["tables"] = transfer.tables(p)
    return p


def test_report_starts_with_the_command_and_labels_the_proxy():
    p = payload(fake_cells(), recipes=("inductive", "paper"), limit=200)
    md = transfer.markdown(p)
    assert md.startswith("Command: `python benchmarks/transfer.py --limit 200`")
    assert "NOT image-text results" in md and "Smoke run" in md
    assert "| tfidf:minilm | **+10.00 ± 0.71** | +6.00 ± 0.71 | +8.00 ± 0.71 |" in md
    assert "## inductive: the source model's own fusion" in md and "## paper: the source model's own fusion" in md
    assert "(incomplete)" in md  # no paper cells
    assert p["tables"]["inductive"]["own"]["summary"]["off_diagonal_above_base"] == 5
    assert p["tables"]["paper"]["own"]["summary"] is None


def test_heatmap_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "out" / "transfer.png"
    transfer.heatmap(payload(fake_cells(), recipes=("inductive", "paper")), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["transfer.png"]  # no temporary file left


@pytest.mark.parametrize("argv, message", [
    (["--combos", "tfidf:minilm"], "--combos: expected at least 2 distinct combos"),
    (["--combos", "tfidf:minilm,minilm:bm25"], "--combos: 'bm25' is a query-document scorer"),
    (["--recipes", "inductive,nope"], "--recipes: unknown learned variant 'nope'"),
    (["--seeds", "0,0"], "--seeds: expected one or more distinct items"),
    (["--seeds", "a"], "--seeds: expected comma-separated ints"),
    (["--epochs", "0"], "--epochs: expected at least 1"),
])
def test_arguments_are_checked_before_any_work(argv, message):
    args = transfer.build_parser().parse_args(argv)
    with pytest.raises(ValueError, match=message):
        transfer.check_args(args)


def test_default_arguments_name_five_combos_and_three_recipes():
    args = transfer.build_parser().parse_args([])
    transfer.check_args(args)
    assert args.combos == ["tfidf:minilm", "minilm:minilm", "bm25:minilm", "lsa:minilm", "tfidf:tfidf"]
    assert args.recipes == ["paper", "inductive", "transductive"] and args.seeds == [0]
