"""benchmarks/layers.py: variants as recipe changes, per-mode defaults, the table with dev and test rSum, the best
layer on dev, the plot, and a tiny synthetic sweep end to end."""
import json

import pytest

from benchmarks import layers
from benchmarks.common import recipe_for


def test_variants_change_only_the_layer_or_the_ablated_setting():
    out = dict(layers.variants(["neighbor_attention", "gcn"], ablations=True, attend=None))
    assert out["gcn"] == {"model": {"layer": "gcn"}}
    assert out["neighbor_attention / no alignment"] == {"model": {"layer": "neighbor_attention"},
                                                        "train": {"alignment": 0.0, "mirror_contrastive": 0.0}}
    assert out["neighbor_attention / inter-only pillars"]["builder"] == {"anchor": "inter"}
    assert out["neighbor_attention / no edge weights"]["model"] == {"layer": "neighbor_attention",
                                                                   "use_edge_weight": False}
    edges = dict(layers.variants(["neighbor_attention", "gatv2"], ablations=False, attend="pyg-edges"))
    assert edges["gatv2"]["model"]["attend"] == "edges" and edges["neighbor_attention"]["model"]["attend"] == "auto"
    recipe = layers.variant_recipe(recipe_for("inductive", 1), out["neighbor_attention / intra-only pillars"])
    base = recipe_for("inductive", 1)
    assert recipe.builder["anchor"] == "intra" and recipe.builder["node_features"] == base.builder["node_features"]
    assert recipe.model["hidden_channels"] == base.model["hidden_channels"] and recipe.train["epochs"] == 1


def parsed(**kw):
    """The parser's defaults with ``kw`` replaced (check_args not yet run)."""
    args = layers.build_parser().parse_args([])
    vars(args).update(kw)
    return args


def test_each_mode_fills_its_own_defaults_and_refuses_the_others_flags():
    syn = parsed()
    layers.check_args(syn)
    assert (syn.train_images, syn.epochs, syn.hidden, syn.attend) == (1000, 2, 64, "pyg-edges")
    assert len(syn.layers) == 8 and syn.seeds == [0, 1, 2]
    f30k = parsed(data="f30k")
    layers.check_args(f30k)
    assert (f30k.train_images, f30k.epochs, f30k.hidden, f30k.attend) == (3000, None, None, "pyg-edges")
    assert f30k.combos == ["tfidf:minilm", "minilm:minilm"]
    for kw, message in ((dict(data="f30k", num_pillars=16), "--num-pillars"), (dict(limit=10), "--limit"),
                        (dict(data="f30k", recipe="nope"), "--recipe: unknown"),
                        (dict(data="f30k", combos="minilm:bm25"), "--combos"), (dict(seeds="1,1"), "--seeds"),
                        (dict(epochs=0), "--epochs")):
        with pytest.raises(ValueError, match=message):
            layers.check_args(parsed(**kw))


def fake_run(combo, variant, seed, dev, test, base=300.0):
    return {"combo": combo, "variant": variant, "seed": seed, "params": 1000, "train_s": 10.0 + seed,
            "dev_fused_rsum": dev, "dev_learned_rsum": dev - 2, "base": {"rsum": base},
            "learned": {"rsum": test - 1}, "fused": {"rsum": test}}


RUNS = [fake_run(c, v, s, dev + s, test + s) for c in ("tfidf:minilm", "minilm:minilm") for s in (0, 1)
        for v, dev, test in (("neighbor_attention", 350.0, 310.0), ("gcn", 351.0 if c == "tfidf:minilm" else 340.0,
                                                                      312.0),
                             ("neighbor_attention / no alignment", 360.0, 305.0))]


def test_summary_and_the_best_layer_on_dev():
    table = layers.summarise(RUNS)
    row = next(t for t in table if (t["combo"], t["variant"]) == ("tfidf:minilm", "gcn"))
    assert row["seeds"] == 2 and row["dev_fused_mean"] == pytest.approx(351.5)
    assert row["dev_fused_std"] == pytest.approx(0.7071, abs=1e-3) and row["gain_fused_mean"] == pytest.approx(12.5)
    best = layers.best_on_dev(table, ["neighbor_attention", "gcn"])
    # the ablation has the highest dev rSum but is no layer; gcn wins on one combo, not on the mean
    assert best["per_combo"]["tfidf:minilm"]["best"] == "gcn"
    assert best["per_combo"]["minilm:minilm"]["best"] == "neighbor_attention"
    assert best["overall"]["best"] == "neighbor_attention" and not best["overall"]["beats_reference"]
    md = layers.markdown(table, best, "python benchmarks/layers.py --data f30k", "note")
    assert md.startswith("Command: `python benchmarks/layers.py --data f30k`")
    assert "| tfidf:minilm | gcn | 2 | 351.50 ± 0.71 | 300.00 | 311.50 ± 0.71 | +11.50 ± 0.71 | 312.50 ± 0.71 | " \
           "+12.50 ± 0.71 | 1,000 | 10 |" in md
    assert "no layer beats the reference neighbor_attention on dev" in md


def test_a_winner_by_less_than_the_seed_noise_is_said_to_be():
    runs = [fake_run(c, v, s, dev, 300.0) for c in ("tfidf:minilm", "minilm:minilm") for s in (0, 1)
            for v, dev in (("neighbor_attention", 350.0), ("gcn", 350.0 + (2.0 if s else -1.0)))]
    best = layers.best_on_dev(layers.summarise(runs), ["neighbor_attention", "gcn"], runs)
    gap = best["overall"]["gap"]  # gaps -1, +2, -1, +2: mean +0.5, sample std sqrt(3), standard error sqrt(3) / 2
    assert best["overall"]["best"] == "gcn" and gap["pairs"] == 4 and gap["mean"] == pytest.approx(0.5)
    assert gap["se"] == pytest.approx(3 ** 0.5 / 2) and not gap["clear"]
    assert "within the seed noise" in "\n".join(layers.best_lines(best))
    clear = [dict(r, dev_fused_rsum=r["dev_fused_rsum"] + (3.0 if r["variant"] == "gcn" else 0.0)) for r in runs]
    assert layers.best_on_dev(layers.summarise(clear), ["neighbor_attention", "gcn"], clear)["overall"]["gap"]["clear"]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    layers.plot(layers.summarise(RUNS), tmp_path / "layers.png", "title")
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_synthetic_sweep_end_to_end(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "layers"
    assert layers.main(["--layers", "neighbor_attention,sage", "--seeds", "0", "--train-images", "40",
                        "--dev-images", "20", "--test-images", "20", "--num-pillars", "4", "--hidden", "16",
                        "--epochs", "1", "--out", str(out)]) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["complete"] and [t["variant"] for t in payload["table"]] == ["neighbor_attention", "sage"]
    assert payload["command"].startswith("python benchmarks/layers.py --layers neighbor_attention,sage")
    assert all(r["dev_fused_rsum"] >= r["dev_base_rsum"] for r in payload["runs"])  # the fusion never loses on dev
    assert out.with_suffix(".png").exists() and "Best layer on dev" in out.with_suffix(".md").read_text()


def test_resume_runs_only_what_the_sweep_lacks_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "layers"
    tiny = ["--seeds", "0", "--train-images", "40", "--dev-images", "20", "--test-images", "20", "--num-pillars", "4",
            "--hidden", "16", "--epochs", "1", "--out", str(out)]
    assert layers.main(["--layers", "neighbor_attention"] + tiny) == 0
    first = json.loads(out.with_suffix(".json").read_text())["runs"]
    trained = []
    fit = layers.fit_reranker
    monkeypatch.setattr(layers, "fit_reranker", lambda *a, **kw: trained.append(kw["model"]["layer"]) or fit(*a, **kw))
    assert layers.main(["--layers", "neighbor_attention,sage", "--resume"] + tiny) == 0
    assert trained == ["sage"]  # the finished neighbor_attention run is kept, not re-run
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["runs"][0] == first[0] and [r["variant"] for r in payload["runs"]] == ["neighbor_attention", "sage"]
    assert len(payload["commands"]) == 2 and " ; " in out.with_suffix(".md").read_text().splitlines()[0]
    with pytest.raises(SystemExit):  # another budget cannot share the table
        layers.main(["--layers", "sage", "--resume"] + tiny[:-4] + ["--epochs", "2", "--out", str(out)])
    assert "was run with epochs=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        layers.main(["--resume", "--seeds", "0"])  # nothing to extend without --out
