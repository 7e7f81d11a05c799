import numpy as np
import pytest
import torch

from pillargraph.baselines import Diffusion, diffusion
from pillargraph.baselines.diffusion import batched_cg


def reference_diffusion(sim, sgg, alpha, gamma, k, kq):
    """Dense solve of (I - alpha W) f = y, written from the paper with loops."""
    sim, sgg = np.asarray(sim), np.asarray(sgg)
    q, g = sim.shape
    knn = [set(sorted((t for t in range(g) if t != i), key=lambda t: -sgg[i, t])[:k]) for i in range(g)]
    a = np.zeros((g, g))
    for i in range(g):
        for j in knn[i]:
            if i in knn[j]:
                a[i, j] = (max(sgg[i, j], 0) ** gamma + max(sgg[j, i], 0) ** gamma) / 2
    d = a.sum(1)
    dinv = np.array([1 / np.sqrt(x) if x > 0 else 0.0 for x in d])
    w = dinv[:, None] * a * dinv[None, :]
    out = np.zeros((q, g))
    for i in range(q):
        y = np.zeros(g)
        for j in sorted(range(g), key=lambda t: -sim[i, t])[:kq]:
            y[j] = max(sim[i, j] / sim[i].max(), 0) ** gamma  # seeds relative to the best (scale-free)
        f = np.linalg.solve(np.eye(g) - alpha * w, y)
        # reached: connected to a seed through positive-weight edges
        seen = {j for j in range(g) if y[j] > 0}
        stack = list(seen)
        while stack:
            u = stack.pop()
            for v in range(g):
                if a[u, v] > 0 and v not in seen:
                    seen.add(v)
                    stack.append(v)
        lo = min(f[j] for j in seen) if seen else 0.0
        span = max(sim[i].max() - sim[i].min(), np.finfo(float).tiny)
        for j in range(g):
            out[i, j] = f[j] if j in seen else lo - 1 - (sim[i].max() - sim[i, j]) / span
    return torch.from_numpy(out)


@pytest.mark.parametrize("k,kq,gamma", [(4, 2, 3.0), (6, 3, 1.0), (50, 10, 3.0)])
def test_matches_dense_solve(make_bundle, k, kq, gamma):
    b = make_bundle(n=8, per=2, seed=6)
    m = Diffusion(alpha=0.9, gamma=gamma, k=k, kq=kq, maxiter=500, tol=1e-13)
    out = m(b, chunk_size=3)
    for d, sim, sgg in (("i2t", b.sim_i2t, b.sim_t2t), ("t2i", b.sim_i2t.T, b.sim_i2i)):
        ref = reference_diffusion(sim, sgg, 0.9, gamma, k, kq)
        got = out[d] if d == "i2t" else out[d].T
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)


def test_batched_cg_matches_solve():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    spd = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, 3, generator=g, dtype=torch.float64)
    b[:, 1] = 0  # a zero right-hand side stays zero
    x = batched_cg(lambda v: spd @ v, b, maxiter=50, tol=1e-14)
    torch.testing.assert_close(x, torch.linalg.solve(spd, b))


def test_default_params_run_and_refuse(make_bundle):
    b = make_bundle(n=10, per=3)
    out = diffusion(b)
    assert out["i2t"].shape == b.sim_i2t.shape and torch.isfinite(out["t2i"]).all()
    with pytest.raises(ValueError, match="sim_i2i"):
        Diffusion()(make_bundle(intra=False), directions="t2i")
    with pytest.raises(ValueError, match="alpha"):
        Diffusion(alpha=1.0)
    assert repr(Diffusion()) == "Diffusion(alpha=0.99, gamma=3.0, k=50, kq=10, maxiter=20, tol=1e-06)"
