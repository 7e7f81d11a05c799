import math

import pytest
import torch

from pillargraph.baselines import DBNorm, QueryBank, dbnorm, get_reranker
from pillargraph.baselines.dbnorm import dbnorm_scores


def reference_dbnorm(sim, qbank, gbank, b1, b2):
    q, g = sim.shape
    out = torch.empty(q, g, dtype=torch.float64)
    for j in range(g):
        z1 = sum(math.exp(b1 * float(qbank[r, j])) for r in range(qbank.shape[0]))
        z2 = sum(math.exp(b2 * float(gbank[r, j])) for r in range(gbank.shape[0]))
        for i in range(q):
            s = float(sim[i, j])
            out[i, j] = math.log(math.exp(b1 * s) / z1 * math.exp(b2 * s) / z2)
    return out


def reference_profile_cosine(profiles, sim):
    """[B, G]: cosine of each bank row's centred profile and each sim column's centred one."""
    out = torch.empty(profiles.shape[0], sim.shape[1], dtype=torch.float64)
    for r in range(profiles.shape[0]):
        a = [float(v) for v in profiles[r]]
        ma = sum(a) / len(a)
        a = [v - ma for v in a]
        for j in range(sim.shape[1]):
            c = [float(sim[i, j]) for i in range(sim.shape[0])]
            mc = sum(c) / len(c)
            c = [v - mc for v in c]
            na = math.sqrt(sum(v * v for v in a))
            nc = math.sqrt(sum(v * v for v in c))
            out[r, j] = sum(x * y for x, y in zip(a, c)) / (na * nc)
    return out


def test_scores_match_reference():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(4, 6, generator=g, dtype=torch.float64)
    qbank = torch.rand(3, 6, generator=g, dtype=torch.float64)
    gbank = torch.rand(5, 6, generator=g, dtype=torch.float64)
    out = dbnorm_scores(sim, qbank, gbank, beta1=0.5, beta2=3.0, chunk_size=2)
    torch.testing.assert_close(out, reference_dbnorm(sim, qbank, gbank, 0.5, 3.0))


def test_class_uses_the_other_direction_as_gallery_bank(make_bundle):
    b = make_bundle(n=5, per=2, seed=8)
    g = torch.Generator().manual_seed(3)
    bank = QueryBank(bank_i2t=torch.rand(4, b.num_texts, generator=g, dtype=torch.float64),
                     bank_t2i=torch.rand(6, b.num_images, generator=g, dtype=torch.float64))
    out = DBNorm()(b, bank=bank, chunk_size=2)
    b1, b2 = 1 / 1.99, 3.0
    s = b.sim_i2t
    # i2t: gallery = captions; gallery bank = bank captions, compared with test captions
    # through their score profiles over the test images
    g_i2t = reference_profile_cosine(bank.bank_t2i, s)
    torch.testing.assert_close(out["i2t"], reference_dbnorm(s, bank.bank_i2t, g_i2t, b1, b2))
    g_t2i = reference_profile_cosine(bank.bank_i2t, s.T)
    torch.testing.assert_close(out["t2i"], reference_dbnorm(s.T, bank.bank_t2i, g_t2i, b1, b2).T)


def test_functional_resolver_and_refusals(make_bundle):
    b = make_bundle(n=5, per=2, seed=1)
    bank = QueryBank(bank_i2t=torch.rand(4, b.num_texts, dtype=torch.float64),
                     bank_t2i=torch.rand(3, b.num_images, dtype=torch.float64))
    a = dbnorm(b, bank, beta2=2.0)
    c = get_reranker("db-norm", beta2=2.0)(b, bank=bank, chunk_size=1)
    for d in ("i2t", "t2i"):
        torch.testing.assert_close(a[d], c[d])
    only_query = QueryBank(bank_i2t=bank.bank_i2t)
    with pytest.raises(ValueError, match="bank_t2i"):  # the gallery bank of i2t is missing
        DBNorm()(b, bank=only_query, directions="i2t")
    with pytest.raises(ValueError, match="bank"):
        DBNorm()(b)
    with pytest.raises(ValueError, match="beta2"):
        DBNorm(beta2=-1)
    assert DBNorm.needs_bank and DBNorm.bank_sides == ("query", "gallery")
