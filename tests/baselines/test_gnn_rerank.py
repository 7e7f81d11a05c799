import numpy as np
import pytest
import torch

from ..helpers.joint_reference import joint_matrix, ranked_list
from pillargraph.baselines import GNNRerank, gnn_rerank


def reference_gnn(sim, sqq, sgg, k1, k2, lam, layers=2):
    """Dense propagation as in the authors' code, with explicit loops."""
    j = joint_matrix(sim, sqq, sgg)
    nq, ng = np.asarray(sim).shape
    n = nq + ng
    lists = [ranked_list(j, i)[:k1] for i in range(n)]
    a = np.zeros((n, n))
    for i in range(n):
        for x in lists[i]:
            a[i, x] = 1.0
    for _ in range(layers):
        a = a + a.T
        new = np.zeros((n, n))
        for i in range(n):
            for x in lists[i][:k2]:
                new[i] += j[i, x] ** 2 * a[x]
            new[i] /= np.linalg.norm(new[i])
        a = new
    out = np.zeros((nq, ng))
    for p in range(nq):
        for g in range(ng):
            out[p, g] = (1 - lam) * a[p] @ a[nq + g] + lam * np.asarray(sim)[p, g]
    return torch.from_numpy(out)


@pytest.mark.parametrize("k1,k2,lam,layers", [(26, 7, 0.3, 2), (4, 2, 0.0, 2), (5, 5, 0.5, 1)])
def test_matches_reference(make_bundle, k1, k2, lam, layers):
    b = make_bundle(n=5, per=2, seed=8)
    out = GNNRerank(k1=k1, k2=k2, lambda_value=lam, layers=layers)(b, chunk_size=3)
    torch.testing.assert_close(out["i2t"], reference_gnn(b.sim_i2t, b.sim_i2i, b.sim_t2t, k1, k2, lam,
                                                         layers))
    torch.testing.assert_close(out["t2i"], reference_gnn(b.sim_i2t.T, b.sim_t2t, b.sim_i2i, k1, k2,
                                                         lam, layers).T)


def test_refusal_params_and_functional(make_bundle):
    b = make_bundle(n=4, per=2)
    with pytest.raises(ValueError, match="sim_t2t"):
        GNNRerank()(b.replace(sim_t2t=None))
    with pytest.raises(ValueError, match="k2"):
        GNNRerank(k1=3, k2=4)
    with pytest.raises(ValueError, match="lambda_value"):
        GNNRerank(lambda_value=2)
    assert set(gnn_rerank(b, directions="t2i")) == {"t2i"}
    assert repr(GNNRerank()) == "GNNRerank(k1=26, k2=7, lambda_value=0.3, layers=2)"
    assert GNNRerank.transductive
