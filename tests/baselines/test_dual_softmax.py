import math

import pytest
import torch

from pillargraph.baselines import DualSoftmax, dual_softmax, get_reranker


def reference_dsl(sim, t):
    q, g = sim.shape
    out = torch.empty(q, g, dtype=torch.float64)
    for j in range(g):
        z = sum(math.exp(float(sim[i, j]) / t) for i in range(q))
        for i in range(q):
            out[i, j] = float(sim[i, j]) * math.exp(float(sim[i, j]) / t) / z
    return out


@pytest.mark.parametrize("t", [1.0, 0.1])
def test_matches_reference(make_bundle, t):
    b = make_bundle(n=5, per=3, seed=6)
    out = DualSoftmax(temperature=t)(b, chunk_size=2)
    torch.testing.assert_close(out["i2t"], reference_dsl(b.sim_i2t, t))
    torch.testing.assert_close(out["t2i"], reference_dsl(b.sim_i2t.T, t).T)


def test_functional_resolver_and_params(make_bundle):
    b = make_bundle(n=4, per=2, seed=1)
    a = dual_softmax(b, temperature=0.5)
    c = get_reranker("DSL", temperature=0.5)(b, chunk_size=1)
    for d in ("i2t", "t2i"):
        torch.testing.assert_close(a[d], c[d])
    with pytest.raises(ValueError, match="temperature"):
        DualSoftmax(temperature=0)
    assert DualSoftmax.transductive and not DualSoftmax.needs_bank
    assert repr(DualSoftmax()) == "DualSoftmax(temperature=1.0)"
