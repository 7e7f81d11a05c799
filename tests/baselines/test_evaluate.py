import pytest
import torch

from pillargraph import evaluate
from pillargraph.baselines import evaluate_rescored


def test_each_direction_from_its_own_matrix(make_bundle):
    b = make_bundle(seed=4)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(b.sim_i2t.shape, generator=g, dtype=torch.float64)
    c = torch.randn(b.sim_i2t.shape, generator=g, dtype=torch.float64)
    res = evaluate_rescored({"i2t": a, "t2i": c}, b.txt2img)
    ea, ec = evaluate(a, b.txt2img), evaluate(c, b.txt2img)
    for k in ("r1", "r5", "r10", "medr", "meanr"):
        assert res[f"i2t_{k}"] == ea[f"i2t_{k}"]
        assert res[f"t2i_{k}"] == ec[f"t2i_{k}"]
    assert res["rsum"] == pytest.approx(sum(ea[f"i2t_r{k}"] + ec[f"t2i_r{k}"] for k in (1, 5, 10)))
    assert list(res) == list(evaluate(a, b.txt2img))


def test_missing_direction_uses_base(make_bundle):
    b = make_bundle(seed=5)
    a = torch.randn(b.sim_i2t.shape, dtype=torch.float64)
    res = evaluate_rescored({"i2t": a}, b)
    base = evaluate(b)
    assert res["t2i_r1"] == base["t2i_r1"] and res["i2t_r1"] == evaluate(a, b.txt2img)["i2t_r1"]
    assert evaluate_rescored({}, b) == base
    with pytest.raises(ValueError, match="t2i"):
        evaluate_rescored({"i2t": a}, b.txt2img)
    with pytest.raises(ValueError, match="unknown"):
        evaluate_rescored({"x": a}, b)
