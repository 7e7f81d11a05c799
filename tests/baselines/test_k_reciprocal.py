import numpy as np
import pytest
import torch

from ..helpers.joint_reference import joint_matrix, ranked_list
from pillargraph.baselines import KReciprocal, k_reciprocal


def reference_k_reciprocal(sim, sqq, sgg, k1, k2, lam):
    """Zhong et al.'s algorithm with sets and loops."""
    j = joint_matrix(sim, sqq, sgg)
    nq, ng = np.asarray(sim).shape
    n = nq + ng
    d = 2 - 2 * j
    d = d / d.max(axis=1, keepdims=True)
    lists = [ranked_list(j, i) for i in range(n)]

    def recip(i, k):
        return [x for x in lists[i][:k + 1] if i in lists[x][:k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        exp = set(r)
        for c in r:
            rc = recip(c, int(round(k1 / 2)))
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                exp |= set(rc)
        exp = sorted(exp)
        w = np.exp(-d[i, exp])
        v[i, exp] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[lists[i][:k2]].mean(axis=0) for i in range(n)])
    out = np.zeros((nq, ng))
    for p in range(nq):
        for g in range(ng):
            mn = np.minimum(v[p], v[nq + g]).sum()
            mx = np.maximum(v[p], v[nq + g]).sum()
            out[p, g] = -((1 - lam) * (1 - mn / mx) + lam * d[p, nq + g])
    return torch.from_numpy(out)


@pytest.mark.parametrize("n,per,seed,k1,k2,lam", [
    (6, 2, 9, 20, 6, 0.3), (6, 2, 9, 4, 3, 0.3), (6, 2, 9, 5, 1, 0.0), (6, 2, 9, 3, 2, 0.8),
    (10, 3, 1, 6, 3, 0.3),  # here the expansion step adds members
])
def test_matches_reference(make_bundle, n, per, seed, k1, k2, lam):
    b = make_bundle(n=n, per=per, seed=seed)
    out = KReciprocal(k1=k1, k2=k2, lambda_value=lam)(b, chunk_size=2)
    torch.testing.assert_close(out["i2t"], reference_k_reciprocal(b.sim_i2t, b.sim_i2i, b.sim_t2t,
                                                                  k1, k2, lam))
    torch.testing.assert_close(out["t2i"], reference_k_reciprocal(b.sim_i2t.T, b.sim_t2t, b.sim_i2i,
                                                                  k1, k2, lam).T)


def test_lambda_one_keeps_base_ranking(make_bundle):
    b = make_bundle(n=8, per=3, seed=1)
    out = KReciprocal(lambda_value=1.0)(b)
    assert torch.equal(out["i2t"].argsort(dim=1), b.sim_i2t.argsort(dim=1))
    assert torch.equal(out["t2i"].argsort(dim=0), b.sim_i2t.argsort(dim=0))


def test_single_positive_t2i_runs_and_refuses(make_bundle):
    b = make_bundle(n=6, per=1, seed=2)  # one caption per image: one positive each way
    out = k_reciprocal(b)
    assert out["t2i"].shape == b.sim_i2t.shape and torch.isfinite(out["t2i"]).all()
    with pytest.raises(ValueError, match="sim_i2i"):
        KReciprocal()(b.replace(sim_i2i=None), directions="t2i")
    with pytest.raises(ValueError, match="lambda_value"):
        KReciprocal(lambda_value=-0.1)
    assert repr(KReciprocal()) == "KReciprocal(k1=20, k2=6, lambda_value=0.3)"
