"""Deliberately plain per-query reference implementations (Python lists, sets and loops)."""
import numpy as np
import torch


def dense(bundle):
    return {
        "i2t": bundle.sim_i2t.double().numpy(),
        "t2i": bundle.sim_i2t.T.double().numpy(),
        "i2i": bundle.sim_i2i.double().numpy(),
        "t2t": bundle.sim_t2t.double().numpy(),
    }


def ranked(row, k, exclude=None):
    order = sorted(range(len(row)), key=lambda j: -row[j])
    if exclude is not None:
        order = [j for j in order if j != exclude]
    return order[:k]


def letter(t):
    return "i" if t == 0 else "t"


def query_graph(bundle, direction, q, L, K, C, gamma, anchor="both", context=0, include_self=True):
    S = dense(bundle)
    qt, gt = (0, 1) if direction == "i2t" else (1, 0)
    intra = letter(qt) + "2" + letter(qt)
    inter_p = ranked(S[direction][q], L)
    intra_p = ([q] + ranked(S[intra][q], L - 1, exclude=q)) if include_self else ranked(S[intra][q], L, exclude=q)
    cands = ranked(S[direction][q], K - 1)
    nodes = [(q, qt)] + [(c, gt) for c in cands]
    nodes += [(c, qt) for c in ranked(S[intra][q], context, exclude=q)]
    feats = []
    for u, t in nodes:
        row = []
        if anchor in ("both", "inter"):
            row += [S[letter(t) + "2" + letter(gt)][u, p] for p in inter_p]
        if anchor in ("both", "intra"):
            row += [S[letter(t) + "2" + letter(qt)][u, p] for p in intra_p]
        feats.append(row)

    def nbrs(u, t):
        return (set(ranked(S[letter(t) + "2i"][u], C)), set(ranked(S[letter(t) + "2t"][u], C)))

    sets = [nbrs(u, t) for u, t in nodes]
    n = len(nodes)
    W = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            if a == b:
                W[a, b] = 2 * C
            else:
                W[a, b] = len(sets[a][0] & sets[b][0]) + len(sets[a][1] & sets[b][1])
    A = np.zeros((n, n))
    for a in range(n):
        row = W[a] / W[a].sum()
        kept = [row[b] if (row[b] > gamma / n or a == b) else 0.0 for b in range(n)]
        A[a] = np.array(kept) / sum(kept)
    t2i = bundle.txt2img.numpy()
    base, y = [], []
    for u, t in nodes:
        base.append(S[letter(qt) + "2" + letter(t)][q, u])
        if t == gt and (u, t) != (q, qt):
            y.append(bool(t2i[u] == q) if direction == "i2t" else bool(u == t2i[q]))
        else:
            y.append(False)
    return dict(nodes=[u for u, _ in nodes], types=[t for _, t in nodes], x=np.array(feats),
                adj=A, base=np.array(base), y=np.array(y))


def assert_rank_columns(columns, s, z_atol):
    """The first two ``'rank'`` columns of one query's candidates against a plain reference:
    ``s`` standardised over the candidates, and the share of candidates scoring strictly higher."""
    s = s.double()
    z = (s - s.mean()) / s.std(unbiased=False)
    torch.testing.assert_close(columns[:, 0].double(), z, atol=z_atol, rtol=0)
    higher = torch.tensor([(s > v).sum() for v in s], dtype=torch.float64) / (len(s) - 1)
    torch.testing.assert_close(columns[:, 1].double(), higher, atol=1e-6, rtol=0)
