import pytest
import torch

from pillargraph.baselines import DBA, dba


def reference_dba(sim, sgg, k, weighting, alpha):
    q, g = sim.shape
    nbrs = []
    for j in range(g):
        others = sorted((t for t in range(g) if t != j), key=lambda t: -float(sgg[j, t]))[:k]
        ws = []
        for r, t in enumerate(others, start=1):
            if weighting == "rank":
                ws.append(1 - r / (k + 1))
            elif weighting == "uniform":
                ws.append(1.0)
            else:
                ws.append(max(float(sgg[j, t]), 0.0) ** alpha)
        nbrs.append(list(zip(others, ws)))
    out = torch.zeros(q, g, dtype=torch.float64)
    for i in range(q):
        for j in range(g):
            out[i, j] = float(sim[i, j]) + sum(w * float(sim[i, t]) for t, w in nbrs[j])
    return out


@pytest.mark.parametrize("k,weighting", [(10, "rank"), (3, "uniform"), (4, "alpha")])
def test_matches_reference(make_bundle, k, weighting):
    b = make_bundle(seed=3)
    out = DBA(k=k, weighting=weighting)(b, chunk_size=3)
    torch.testing.assert_close(out["i2t"], reference_dba(b.sim_i2t, b.sim_t2t, k, weighting, 3.0))
    torch.testing.assert_close(out["t2i"], reference_dba(b.sim_i2t.T, b.sim_i2i, k, weighting, 3.0).T)


def test_functional_form_and_k_larger_than_gallery(make_bundle):
    b = make_bundle(n=4, per=2)
    a = dba(b, k=50, directions="t2i")  # 4 images: 3 neighbours each at most
    assert set(a) == {"t2i"}
    torch.testing.assert_close(a["t2i"], reference_dba(b.sim_i2t.T, b.sim_i2i, 50, "rank", 3.0).T)


def test_refuses_missing_intra_and_bad_params(make_bundle):
    with pytest.raises(ValueError, match="sim_t2t"):
        DBA()(make_bundle(intra=False), directions="i2t")
    with pytest.raises(ValueError, match="weighting"):
        DBA(weighting="linear")
    with pytest.raises(ValueError, match="k"):
        DBA(k=1.5)
    assert repr(DBA()) == "DBA(k=10, weighting='rank', alpha=3.0)"
