import math

import pytest
import torch

from pillargraph.baselines import InvertedSoftmax, QueryBank, get_reranker, inverted_softmax
from pillargraph.baselines.inverted_softmax import inverted_softmax_scores


def reference_is(sim, bank, beta):
    q, g = sim.shape
    out = torch.empty(q, g, dtype=torch.float64)
    for j in range(g):
        z = sum(math.exp(beta * float(bank[b, j])) for b in range(bank.shape[0]))
        for i in range(q):
            out[i, j] = math.log(math.exp(beta * float(sim[i, j])) / z)
    return out


def make_bank(b, seed=0, rows=(5, 4)):
    g = torch.Generator().manual_seed(seed)
    return QueryBank(bank_i2t=torch.rand(rows[0], b.num_texts, generator=g, dtype=torch.float64),
                     bank_t2i=torch.rand(rows[1], b.num_images, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
def test_matches_reference(make_bundle, beta):
    b = make_bundle(n=5, per=2, seed=1)
    bank = make_bank(b)
    out = InvertedSoftmax(beta=beta)(b, bank=bank, chunk_size=2)
    torch.testing.assert_close(out["i2t"], reference_is(b.sim_i2t, bank.bank_i2t, beta))
    torch.testing.assert_close(out["t2i"], reference_is(b.sim_i2t.T, bank.bank_t2i, beta).T)


def test_large_scores_do_not_overflow():
    sim = torch.tensor([[100.0, 99.0]])
    out = inverted_softmax_scores(sim, torch.tensor([[100.0, 50.0]]), beta=20)
    assert torch.isfinite(out).all() and out[0, 1] > out[0, 0]


def test_functional_and_resolver(make_bundle):
    b = make_bundle(n=5, per=2, seed=2)
    bank = make_bank(b)
    a = inverted_softmax(b, bank, beta=7.0, directions="t2i")
    c = get_reranker("IS", beta=7.0)(b, bank=bank, directions="t2i")
    assert set(a) == {"t2i"}
    torch.testing.assert_close(a["t2i"], c["t2i"])


def test_refuses_missing_bank(make_bundle):
    b = make_bundle(n=4, per=2)
    with pytest.raises(ValueError, match="bank_i2t"):
        InvertedSoftmax()(b)
    with pytest.raises(ValueError, match="bank_t2i"):
        InvertedSoftmax()(b, bank=QueryBank(bank_i2t=torch.rand(3, b.num_texts)), directions="t2i")
    with pytest.raises(ValueError, match="beta"):
        InvertedSoftmax(beta=0)
    with pytest.raises(ValueError, match="columns"):
        inverted_softmax_scores(b.sim_i2t, torch.rand(3, 2, dtype=torch.float64))
    assert InvertedSoftmax.needs_bank and not InvertedSoftmax.transductive
