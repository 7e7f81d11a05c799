import pytest
import torch

from pillargraph.baselines import KRNN, get_reranker, krnn
from pillargraph.baselines.krnn import krnn_scores, reverse_ranks


def reference_reverse_rank(sim, q, g):
    """Pessimistic: the number of other queries scoring g at least as high as q does."""
    return sum(1 for i in range(sim.shape[0]) if i != q and float(sim[i, g]) >= float(sim[q, g]))


def reference_new_order(sim, k1):
    """For every query (row), its top-k1 candidates in the re-sorted order."""
    out = []
    for q in range(sim.shape[0]):
        cand = sorted(range(sim.shape[1]), key=lambda g: -float(sim[q, g]))[:k1]
        rev = [reference_reverse_rank(sim, q, g) for g in cand]
        out.append([cand[j] for j in sorted(range(k1), key=lambda j: (rev[j], j))])
    return out


def check_rows(out, sim, k1):
    """The candidate at new position p takes the p-th best candidate score (random data: no ties)."""
    for q, new in enumerate(reference_new_order(sim, k1)):
        top = sorted(sim[q].tolist(), reverse=True)[:k1]
        want = sim[q].clone()
        for p, g in enumerate(new):
            want[g] = top[p]
        torch.testing.assert_close(out[q], want)


@pytest.mark.parametrize("k1", [1, 3, 6])
def test_matches_reference(make_bundle, k1):
    b = make_bundle(n=6, per=2, seed=3)
    out = KRNN(k1_i2t=k1, k1_t2i=k1)(b, chunk_size=2)
    check_rows(out["i2t"], b.sim_i2t, k1)
    check_rows(out["t2i"].T, b.sim_i2t.T, k1)


def test_reordering_happens_and_uses_reverse_ranks():
    # query 0 prefers gallery 0, but gallery 0 prefers query 1: KRNN swaps 0's top two
    sim = torch.tensor([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0]], dtype=torch.float64)
    out = krnn_scores(sim, 2)
    assert out[0].argmax() == 1 and out[1].argmax() == 0
    assert out[0, 2] == 0.0  # outside the top-k1: untouched


def test_reverse_ranks_with_ties():
    g = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 3, (9, 5), generator=g).double()  # many ties
    cand = torch.randint(0, 5, (9, 4), generator=g)
    got = reverse_ranks(sim, cand, chunk_size=2)
    for q in range(9):
        for j in range(4):
            assert int(got[q, j]) == reference_reverse_rank(sim, q, int(cand[q, j]))


def test_chunking_and_functional_agree(make_bundle):
    b = make_bundle(n=8, per=3, seed=5)
    a = krnn(b, k1_i2t=5, k1_t2i=4)
    c = get_reranker("MTFN-RR", k1_i2t=5, k1_t2i=4)(b, chunk_size=1)
    for d in ("i2t", "t2i"):
        torch.testing.assert_close(a[d], c[d])


def test_refusals_and_flags(make_bundle):
    b = make_bundle(n=3, per=1)
    with pytest.raises(ValueError, match="k1_i2t"):
        KRNN(k1_i2t=0)
    with pytest.raises(ValueError, match="k1_i2t"):
        KRNN(k1_i2t=4)(b, directions="i2t")
    with pytest.raises(ValueError, match="k1"):
        krnn_scores(b.sim_i2t, 10)
    assert KRNN.transductive and not KRNN.needs_bank and not KRNN.needs_intra
    assert repr(KRNN()) == "KRNN(k1_i2t=15, k1_t2i=20)"
