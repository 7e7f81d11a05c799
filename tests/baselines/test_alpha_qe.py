import pytest
import torch

from pillargraph.baselines import AlphaQE, alpha_qe


def reference_alpha_qe(sim, sgg, alpha, n):
    q, g = sim.shape
    out = torch.zeros(q, g, dtype=torch.float64)
    for i in range(q):
        order = sorted(range(g), key=lambda j: -float(sim[i, j]))[:n]
        for j in range(g):
            v = float(sim[i, j])
            for t in order:
                v += max(float(sim[i, t]), 0.0) ** alpha * float(sgg[t, j])
            out[i, j] = v
    return out


@pytest.mark.parametrize("alpha,n", [(3.0, 10), (1.0, 2), (0.5, 4)])
def test_matches_reference(make_bundle, alpha, n):
    b = make_bundle(seed=1)
    out = AlphaQE(alpha=alpha, n=n)(b, chunk_size=4)
    torch.testing.assert_close(out["i2t"], reference_alpha_qe(b.sim_i2t, b.sim_t2t, alpha, n))
    ref_t2i = reference_alpha_qe(b.sim_i2t.T, b.sim_i2i, alpha, n).T
    torch.testing.assert_close(out["t2i"], ref_t2i)


def test_functional_and_chunking_agree(make_bundle):
    b = make_bundle(seed=2)
    a = alpha_qe(b, directions="t2i")
    c = AlphaQE()(b, directions=["t2i"], chunk_size=1)
    assert set(a) == {"t2i"}
    assert a["t2i"].shape == b.sim_i2t.shape
    torch.testing.assert_close(a["t2i"], c["t2i"])


def test_refuses_missing_intra(make_bundle):
    b = make_bundle(intra=False)
    with pytest.raises(ValueError, match="sim_t2t"):
        AlphaQE()(b, directions="i2t")
    with pytest.raises(ValueError, match="sim_i2i"):
        AlphaQE()(b, directions="t2i")


def test_bad_params_and_repr():
    with pytest.raises(ValueError, match="n"):
        AlphaQE(n=-1)
    with pytest.raises(ValueError, match="alpha"):
        AlphaQE(alpha=float("nan"))
    assert repr(AlphaQE()) == "AlphaQE(alpha=3.0, n=10)"
    assert AlphaQE.needs() == {"intra": True, "bank": False, "embeddings": False,
                               "transductive": False, "directions": ("i2t", "t2i")}
