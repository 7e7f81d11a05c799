import json

import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.baselines import QueryBank, available_rerankers, evaluate_rescored
from pillargraph.baselines.dual_softmax import dual_softmax_scores
from pillargraph.compare import ComparisonReport, compare


def make(seed=0, n=8, per=3, d=6):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=torch.float64)
    t2i = torch.arange(n).repeat_interleave(per)
    txt = img[t2i] + 0.8 * torch.randn(n * per, d, generator=g, dtype=torch.float64)
    b = SimilarityBundle.from_embeddings(img, txt, t2i)
    bank = QueryBank(bank_i2t=torch.randn(10, n * per, generator=g, dtype=torch.float64),
                     bank_t2i=torch.randn(12, n, generator=g, dtype=torch.float64))
    return b, bank


def test_default_runs_all_and_skips_with_reasons():
    b, _ = make()
    b = b.replace(sim_i2i=None, sim_t2t=None)
    rep = compare(b, params={"nnn": {"k": 3}, "krnn": {"k1_t2i": 5}})
    names = [r.method for r in rep.rows]
    assert names == list(available_rerankers())
    skipped = {r.method: r.reason for r in rep.rows if r.status == "skipped"}
    assert "needs a query bank" in skipped["nnn"] and "sim_t2t" in skipped["alpha_qe"]
    assert rep.row("dual_softmax").status == "ok" and rep.row("krnn").status == "ok"
    md = rep.to_markdown()
    assert "Not run:" in md and "- nnn (skipped)" in md


def test_table_content_matches_direct_evaluation(tmp_path):
    b, bank = make(1)
    extra = {"learned": {"i2t": b.sim_i2t * 2, "t2i": dual_softmax_scores(b.sim_i2t.T).T}}
    rep = compare(b, methods=["dual_softmax", "NNN"], bank=bank, params={"NNN": {"k": 4}},
                  extra=extra, extra_needs={"learned": {"intra": True, "transductive": False}})
    assert rep.base == evaluate(b)
    ds = rep.row("dual_softmax")
    want = evaluate_rescored({"i2t": dual_softmax_scores(b.sim_i2t),
                              "t2i": dual_softmax_scores(b.sim_i2t.T).T}, b)
    assert ds.metrics == want
    assert ds.delta["rsum"] == pytest.approx(want["rsum"] - rep.base["rsum"])
    assert ds.needs == {"intra": False, "bank": False, "embeddings": False, "transductive": True}
    assert ds.seconds is not None and ds.seconds >= 0
    assert rep.row("nnn").params == {"k": 4, "alpha": 0.5} and rep.row("nnn").needs["bank"]
    learned = rep.row("learned")
    assert learned.metrics["i2t_r1"] == evaluate(b)["i2t_r1"]  # scaling keeps the ranking
    assert learned.metrics["t2i_r1"] == want["t2i_r1"]

    md = rep.to_markdown()
    lines = [l for l in md.splitlines() if l.startswith("| dual_softmax |")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[1] == f"{want['i2t_r1']:.2f}" and cells[7] == f"{want['rsum']:.2f}"
    assert cells[-4:] == ["-", "-", "-", "yes"]
    learned_line = next(l for l in md.splitlines() if l.startswith("| learned |"))
    assert learned_line.rstrip(" |").endswith("yes | ? | ? | -")

    rep.command = "python bench.py"
    rep.save(tmp_path / "r.md", tmp_path / "r.json")
    assert (tmp_path / "r.md").read_text().startswith("Command: `python bench.py`")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["config"]["bundle"] == {"num_images": 8, "num_texts": 24,
                                        "fields": ["sim_i2i", "sim_t2t", "img_emb", "txt_emb"]}
    assert data["config"]["bank"] == {"bank_i2t": [10, 24], "bank_t2i": [12, 8]}
    assert data["config"]["params"]["nnn"] == {"k": 4, "alpha": 0.5}
    assert [r["method"] for r in data["rows"]] == ["dual_softmax", "nnn", "learned"]
    assert not list(tmp_path.glob(".*tmp"))


def test_failures_are_recorded_and_bad_arguments_refused():
    b, bank = make(2)
    rep = compare(b, methods=["nnn"], bank=bank)  # k=256 > 10 bank rows
    assert rep.row("nnn").status == "failed" and "exceeds" in rep.row("nnn").reason
    with pytest.raises(ValueError, match="params"):
        compare(b, methods=["krnn"], params={"nnn": {"k": 2}})
    with pytest.raises(ValueError, match="unknown method"):
        compare(b, methods=["nope"])
    with pytest.raises(ValueError, match="shape"):
        compare(b, methods=[], extra={"x": {"i2t": b.sim_i2t[:2]}})
    assert isinstance(compare(b, methods=[]), ComparisonReport)
