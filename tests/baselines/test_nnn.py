import pytest
import torch

from pillargraph.baselines import NNN, QueryBank, get_reranker, nnn
from pillargraph.baselines.nnn import nnn_scores


def reference_nnn(sim, bank, k, alpha):
    q, g = sim.shape
    out = torch.empty(q, g, dtype=torch.float64)
    for j in range(g):
        col = sorted((float(bank[r, j]) for r in range(bank.shape[0])), reverse=True)
        bias = sum(col[:k]) / k
        for i in range(q):
            out[i, j] = float(sim[i, j]) - alpha * bias
    return out


@pytest.mark.parametrize("k,alpha", [(1, 0.5), (3, 1.0), (6, 0.25)])
def test_matches_reference(make_bundle, k, alpha):
    b = make_bundle(n=5, per=2, seed=7)
    g = torch.Generator().manual_seed(2)
    bank = QueryBank(bank_i2t=torch.randn(6, b.num_texts, generator=g, dtype=torch.float64),
                     bank_t2i=torch.randn(7, b.num_images, generator=g, dtype=torch.float64))
    out = NNN(k=k, alpha=alpha)(b, bank=bank, chunk_size=2)
    torch.testing.assert_close(out["i2t"], reference_nnn(b.sim_i2t, bank.bank_i2t, k, alpha))
    torch.testing.assert_close(out["t2i"], reference_nnn(b.sim_i2t.T, bank.bank_t2i, k, alpha).T)


def test_functional_resolver_and_refusals(make_bundle):
    b = make_bundle(n=5, per=2, seed=3)
    bank = QueryBank(bank_i2t=torch.randn(4, b.num_texts, dtype=torch.float64))
    a = nnn(b, bank, k=2, directions="i2t")
    c = get_reranker("NNN", k=2)(b, bank=bank, directions="i2t", chunk_size=1)
    torch.testing.assert_close(a["i2t"], c["i2t"])
    with pytest.raises(ValueError, match="k: 256 exceeds the 4 rows of bank_i2t"):
        NNN()(b, bank=bank, directions="i2t")
    with pytest.raises(ValueError, match="bank_t2i"):
        NNN(k=2)(b, bank=bank)
    with pytest.raises(ValueError, match="k"):
        nnn_scores(b.sim_i2t, bank.bank_i2t, k=5)
    assert repr(NNN()) == "NNN(k=256, alpha=0.5)"
