"""benchmarks/generalization.py: one row per combo from caption_proxy.py results, the training-free row chosen
on dev (never on test), seed statistics, the report; on made-up result files."""
import json

import pytest

from benchmarks import generalization

INTRA = {"intra": True, "bank": False, "embeddings": False, "transductive": False}
TRANSDUCTIVE = dict(INTRA, transductive=True)


def row(method, rsum, needs=INTRA, status="ok", **params):
    return {"method": method, "status": status, "needs": needs, "params": params,
            "metrics": {"rsum": rsum} if status == "ok" else None}


def result(combo="tfidf:minilm", base=300.0, protocol="f30k (f30k)"):
    rows = [row("alpha_qe", 301.0), row("alpha_qe (dev-tuned)", 303.0), row("alpha_qe (dev-tuned + fusion)", 305.0),
            row("gnn_rerank (dev-tuned)", 309.0, TRANSDUCTIVE), row("gnn_rerank (dev-tuned + fusion)", 340.0, TRANSDUCTIVE),
            row("ecn (dev-tuned + fusion)", 0, TRANSDUCTIVE, status="failed"),
            row("pillargraph inductive (learned)", 306.0),
            row("pillargraph inductive (learned + dev-selected base fusion)", 310.0, rsum_per_seed=[309.0, 310.0, 311.0])]
    tuned = {"alpha_qe": {"params": {"alpha": 1.0}, "fusion": {"i2t": 0.5, "t2i": 0.5}, "dev_rsum": 310.0,
                          "dev_fused_rsum": 312.0},
             # on dev the tuned row wins (its fused row is better on test: it must not be chosen)
             "gnn_rerank": {"params": {"k1": 10}, "fusion": {"i2t": 1.0, "t2i": 0.9}, "dev_rsum": 320.0,
                            "dev_fused_rsum": 319.0},
             # best on dev, but failed on test: skipped
             "ecn": {"params": {}, "fusion": {}, "dev_rsum": 330.0, "dev_fused_rsum": 331.0}}
    learned = {"inductive": {"train_images": 3000, "train_form": "3000 img, dense, episodes of 1000",
                             "settings": {"train": {"epochs": 1}}, "seeds": {"0": {}, "1": {}, "2": {}}}}
    return {"protocol": protocol, "combo": combo, "table": {"base": {"rsum": base}, "rows": rows}, "tuned": tuned,
            "cases": [{"test": "f30k_test", "learned": learned}]}


def test_training_free_row_is_chosen_on_dev_not_test():
    best = generalization.best_by_dev(result())
    assert best["method"] == "gnn_rerank (dev-tuned)" and best["test_rsum"] == 309.0 and best["dev_rsum"] == 320.0
    assert best["flags"] == ["intra", "transductive"] and best["fusion"] is None
    inductive = generalization.best_by_dev(result(), allow_transductive=False)
    assert inductive["method"] == "alpha_qe (dev-tuned + fusion)" and inductive["fusion"] == {"i2t": 0.5, "t2i": 0.5}
    bare = result()
    bare["tuned"] = {}
    assert generalization.best_by_dev(bare) is None


def test_recipe_cells_give_seed_mean_sample_std_and_gain():
    cell = generalization.recipe_cells(result())["inductive"]
    assert cell["fused_rsum"] == pytest.approx(310.0) and cell["fused_std"] == pytest.approx(1.0)
    assert cell["fused_gain"] == pytest.approx(10.0) and cell["learned_rsum"] == 306.0
    assert (cell["train_images"], cell["epochs"], cell["seeds"], cell["transductive"]) == (3000, 1, [0, 1, 2], False)


def write_run(path, results, limit=None):
    path.write_text(json.dumps({"command": f"python benchmarks/caption_proxy.py --out {path.stem}",
                                "config": {"limit": limit}, "results": results}))
    return path


def test_table_from_several_files(tmp_path):
    a = write_run(tmp_path / "a.json", [result(), result(protocol="f30k-coco (coco1k)")])
    b = write_run(tmp_path / "b.json", [result("bm25:minilm", 290.0)], limit=200)
    out = tmp_path / "gen"
    assert generalization.main([str(a), str(b), "--out", str(out)]) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    assert [r["combo"] for r in payload["rows"]] == ["tfidf:minilm", "bm25:minilm"]  # the coco result is left out
    assert payload["recipes"] == ["inductive"] and payload["limits"] == [200]
    md = out.with_suffix(".md").read_text()
    assert md.startswith("Command: `python benchmarks/generalization.py ")
    assert "NOT image-text results" in md and "Smoke run" in md
    assert "| tfidf:minilm | 300.0 | 310.0 (+10.0) ± 1.0 | gnn_rerank (dev-tuned) 309.0 (+9.0; flags: intra, " \
           "transductive) | alpha_qe (dev-tuned + fusion) 305.0 (+5.0; flags: intra) |" in md
    assert "- `inductive`: learned + fusion above the base in 2/2 combos" in md
    assert "in 2/2." in md  # 310 > 305 (the non-transductive row an inductive recipe competes with)


def test_a_combo_given_twice_or_no_f30k_result_is_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a.json", [result()])
    with pytest.raises(SystemExit):
        generalization.main([str(a), str(a), "--out", str(tmp_path / "x")])
    assert "combo tfidf:minilm appears in two results" in capsys.readouterr().err
    c = write_run(tmp_path / "c.json", [result(protocol="transfer")])
    with pytest.raises(SystemExit):
        generalization.main([str(c), "--out", str(tmp_path / "x")])
    assert "no f30k protocol result" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generalization.main([str(tmp_path / "missing.json")])
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
