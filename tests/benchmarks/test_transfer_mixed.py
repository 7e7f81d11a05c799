"""benchmarks/transfer_mixed.py: the tables, the report, the argument checks on made-up numbers, and the pooled
fusion on synthetic dev splits; no caption is read."""
import pytest

from benchmarks import transfer_mixed as tm
from benchmarks.common import PROXY_NOTE

COMBOS = ["tfidf:minilm", "bm25:minilm", "lsa:minilm"]
BASES = {"tfidf:minilm": 300.0, "bm25:minilm": 320.0, "lsa:minilm": 230.0}
# per target: in-domain, all combos, leave-one-out gains
GAIN = {"tfidf:minilm": (10.0, 11.0, 8.0), "bm25:minilm": (12.0, 12.0, 9.0), "lsa:minilm": (8.0, 9.0, -1.0)}


def fake_cells(seeds=(0, 1), recipe="inductive"):
    cells = []
    for b, gains in GAIN.items():
        for kind, g in zip(tm.MODELS, gains):
            for s in seeds:
                d = 0.5 if s else -0.5  # the seeds straddle the mean
                cells.append({"recipe": recipe, "seed": s, "target": b, "model": kind, "learned": BASES[b] - 3,
                              "own": BASES[b] + g + d, "target_dev": BASES[b] + g + d + 1})
    return cells


def payload(cells, recipes=("inductive",), limit=None):
    config = {"combos": COMBOS, "recipes": list(recipes), "seeds": [0, 1], "train_images": 200, "epochs": 1,
              "limit": limit}
    return {"command": "python benchmarks/transfer_mixed.py --limit 200", "note": PROXY_NOTE, "config": config,
            "base_rsum": BASES, "cells": cells, "models": {}}


def test_table_means_over_seeds_and_compares_leave_one_out_with_in_domain():
    t = tm.table(payload(fake_cells()), "inductive", "own")
    assert t["rows"]["bm25:minilm"]["leave_out"] == (pytest.approx(9.0), pytest.approx(0.7071, abs=1e-3))
    s = t["summary"]
    assert (s["leave_out_above_base"], s["targets"]) == (2, 3)
    assert s["mean_in_domain_gain"] == pytest.approx(10.0) and s["mean_leave_out_gain"] == pytest.approx(16.0 / 3)
    assert s["ratio_pct"] == pytest.approx(100 * (16.0 / 3) / 10.0)
    assert not s["targets_met"]  # one target below its base, and 53% < 70%
    dev = tm.table(payload(fake_cells()), "inductive", "target_dev")["summary"]
    assert dev["mean_leave_out_gain"] == pytest.approx(16.0 / 3 + 1)
    assert "2/3" in tm.summary_line(s) and "53%" in tm.summary_line(s) and "NOT met" in tm.summary_line(s)


def test_targets_are_met_only_when_every_target_gains_and_the_ratio_reaches_70_percent():
    cells = [c for c in fake_cells() if not (c["target"] == "lsa:minilm" and c["model"] == "leave_out")]
    cells += [dict(c, target="lsa:minilm", model="leave_out", own=BASES["lsa:minilm"] + 7.0)
              for c in fake_cells() if (c["target"], c["model"]) == ("lsa:minilm", "leave_out")]
    s = tm.table(payload(cells), "inductive", "own")["summary"]
    assert s["leave_out_above_base"] == 3 and s["ratio_pct"] == pytest.approx(80.0) and s["targets_met"]


def test_incomplete_tables_have_no_summary_and_the_report_says_so():
    p = payload(fake_cells()[:-2], recipes=("inductive", "paper"), limit=200)
    p["complete"] = False
    p["tables"] = {r: {s: tm.table(p, r, s) for s in tm.SETTINGS} for r in p["config"]["recipes"]}
    assert p["tables"]["inductive"]["own"]["summary"] is None
    md = tm.markdown(p)
    assert md.startswith("Command: `python benchmarks/transfer_mixed.py --limit 200`")
    assert "NOT image-text results" in md and "Smoke run" in md and "Partial: run in progress" in md
    assert "| tfidf:minilm (300.0) | +10.00 ± 0.71 | +11.00 ± 0.71 | +8.00 ± 0.71 | 80% |" in md
    assert "| lsa:minilm (230.0) | +8.00 ± 0.71 | +9.00 ± 0.71 | - | - |" in md  # its leave-one-out cells left out
    assert "## paper: fusion re-selected on the target's dev" in md


class FakeTarget:
    """What pooled_fusion reads of a transfer.Target: the dev split and its graphs under a builder."""

    def __init__(self, dev):
        self.splits = {"dev": dev}

    def graphs(self, split, builder):
        return {d: builder.build(self.splits[split], d) for d in ("i2t", "t2i")}


def test_pooled_fusion_maximises_the_mean_dev_rsum_over_the_sources():
    from pillargraph import synthetic_splits
    from pillargraph.rerank import select_fusion_weights
    from pillargraph.train import recipe_parts
    builder, model, _ = recipe_parts("inductive", seed=0)
    devs = [FakeTarget(synthetic_splits(10, 40, 10, seed=s)[1]) for s in (0, 1)]
    pooled = tm.pooled_fusion(model.eval(), builder, devs, ("directions", "fused"))
    tables = {o: [select_fusion_weights(model, t.splits["dev"], builder, output=o).table for t in devs]
              for o in ("directions", "fused")}
    mean = {o: {k: (t[0][k] + t[1][k]) / 2 for k in t[0]} for o, t in tables.items()}
    best = max(v for m in mean.values() for v in m.values())
    assert pooled["dev_rsum_mean"] == pytest.approx(best)
    assert mean[pooled["output"]][(pooled["i2t"], pooled["t2i"])] == pytest.approx(best)
    assert pooled["dev_base_rsum_mean"] == pytest.approx(mean["directions"][(0.0, 0.0)])


@pytest.mark.parametrize("argv, message", [
    (["--combos", "tfidf:minilm,bm25:minilm"], "--combos: expected at least 3 combos"),
    (["--train-images", "6000"], "--train-images: at most 5000"),
    (["--recipes", "nope"], "--recipes: unknown learned variant 'nope'"),
])
def test_arguments_are_checked_before_any_work(argv, message):
    args = tm.build_parser().parse_args(argv)
    with pytest.raises(ValueError, match=message):
        tm.check_mixed_args(args)


def test_a_mixed_model_has_its_own_run_folder(tmp_path):
    from benchmarks.common import model_dir
    path = model_dir(tmp_path, "tfidf:minilm+bm25:minilm", "inductive", 1)
    assert path == tmp_path / "tfidf-minilm+bm25-minilm" / "inductive" / "seed1"
    with pytest.raises(ValueError, match="--combo"):
        model_dir(tmp_path, "tfidf:minilm+nope:minilm", "inductive", 1)
