import numpy as np
import pytest
import torch

from ..helpers.joint_reference import fill_unreached_row, joint_matrix, ranked_list
from pillargraph.baselines import ECN, ecn


def reference_ecn(sim, sqq, sgg, k, t, q):
    j = joint_matrix(sim, sqq, sgg)
    nq, ng = np.asarray(sim).shape
    n = nq + ng
    lists = [ranked_list(j, i) for i in range(n)]

    def rdist(a, b):  # rank-list similarity R(a, b)
        pa = {x: p for p, x in enumerate(lists[a])}
        pb = {x: p for p, x in enumerate(lists[b])}
        return sum(max(0, k - pa[x]) * max(0, k - pb[x]) for x in range(n))

    def expanded(i):
        first = lists[i][1:t + 1]
        return first + [y for x in first for y in lists[x][1:q + 1]]

    out = np.zeros((nq, ng))
    for p in range(nq):
        row = np.zeros(ng)
        for g in range(ng):
            ep, eg = expanded(p), expanded(nq + g)
            row[g] = (sum(rdist(a, nq + g) for a in ep) + sum(rdist(b, p) for b in eg)) / (
                len(ep) + len(eg))
        out[p] = fill_unreached_row(row, row != 0, np.asarray(sim)[p])
    return torch.from_numpy(out)


@pytest.mark.parametrize("k,t,q", [(25, 3, 8), (4, 2, 3), (3, 1, 1)])
def test_matches_reference(make_bundle, k, t, q):
    b = make_bundle(n=5, per=2, seed=7)
    out = ECN(k=k, t=t, q=q)(b, chunk_size=2)
    torch.testing.assert_close(out["i2t"], reference_ecn(b.sim_i2t, b.sim_i2i, b.sim_t2t, k, t, q))
    torch.testing.assert_close(out["t2i"], reference_ecn(b.sim_i2t.T, b.sim_t2t, b.sim_i2i, k, t, q).T)


def test_flags_refusal_and_functional(make_bundle):
    assert ECN.transductive and ECN.needs_intra
    b = make_bundle(n=4, per=2)
    with pytest.raises(ValueError, match="sim_i2i"):
        ECN()(b.replace(sim_i2i=None), directions="i2t")  # query-side intra missing
    with pytest.raises(ValueError, match="sim_t2t"):
        ECN()(b.replace(sim_t2t=None), directions="i2t")
    out = ecn(b, directions="i2t")
    assert set(out) == {"i2t"} and out["i2t"].shape == b.sim_i2t.shape
    assert repr(ECN()) == "ECN(k=25, t=3, q=8)"
