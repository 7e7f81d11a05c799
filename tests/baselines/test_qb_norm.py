import math

import pytest
import torch

from pillargraph.baselines import QBNorm, QueryBank, get_reranker, qb_norm
from pillargraph.baselines.qb_norm import activation_set, qb_norm_scores


def reference_qb_norm(sim, bank, beta, k):
    q, g = sim.shape
    hubs = set()
    for r in range(bank.shape[0]):
        hubs.update(sorted(range(g), key=lambda j: -float(bank[r, j]))[:k])
    out = sim.clone().double()
    for i in range(q):
        top1 = max(range(g), key=lambda j: float(sim[i, j]))
        if top1 in hubs:
            for j in range(g):
                z = sum(math.exp(beta * float(bank[r, j])) for r in range(bank.shape[0]))
                out[i, j] = math.log(math.exp(beta * float(sim[i, j])) / z)
    return out, hubs


@pytest.mark.parametrize("k", [1, 2])
def test_matches_reference(make_bundle, k):
    b = make_bundle(n=8, per=2, seed=4)
    g = torch.Generator().manual_seed(1)
    bank = QueryBank(bank_i2t=torch.rand(3, b.num_texts, generator=g, dtype=torch.float64),
                     bank_t2i=torch.rand(2, b.num_images, generator=g, dtype=torch.float64))
    out = QBNorm(beta=5.0, k=k)(b, bank=bank, chunk_size=3)
    ref_i2t, hubs = reference_qb_norm(b.sim_i2t, bank.bank_i2t, 5.0, k)
    ref_t2i, _ = reference_qb_norm(b.sim_i2t.T, bank.bank_t2i, 5.0, k)
    torch.testing.assert_close(out["i2t"], ref_i2t)
    torch.testing.assert_close(out["t2i"], ref_t2i.T)
    assert set(activation_set(bank.bank_i2t, k).nonzero().flatten().tolist()) == hubs


def test_mixes_normalised_and_raw_rows():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.2]], dtype=torch.float64)
    bank = torch.tensor([[0.8, 0.0, 0.1]], dtype=torch.float64)  # gallery 0 is the only hub
    out = qb_norm_scores(sim, bank, beta=2.0, k=1)
    assert not torch.equal(out[0], sim[0])      # top-1 is the hub: normalised
    torch.testing.assert_close(out[1], sim[1])  # top-1 is not a hub: unchanged


def test_functional_resolver_and_refusal(make_bundle):
    b = make_bundle(n=5, per=2, seed=2)
    bank = QueryBank(bank_i2t=torch.rand(4, b.num_texts, dtype=torch.float64))
    a = qb_norm(b, bank, directions="i2t")
    c = get_reranker("dynamic-inverted-softmax")(b, bank=bank, directions="i2t", chunk_size=1)
    torch.testing.assert_close(a["i2t"], c["i2t"])
    with pytest.raises(ValueError, match="bank_t2i"):
        QBNorm()(b, bank=bank)
    with pytest.raises(ValueError, match="bank"):
        QBNorm()(b)
    with pytest.raises(ValueError, match="k"):
        QBNorm(k=0)
    assert repr(QBNorm()) == "QBNorm(beta=20.0, k=1)"
