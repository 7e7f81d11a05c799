import numpy as np
import pytest
import torch

from pillargraph import evaluate, evaluate_folds
from pillargraph.metrics import METRIC_KEYS, i2t_ranks, t2i_ranks


def reference_evaluate(sim, txt2img, ks=(1, 5, 10)):
    """Plain per-query loops, written straight from the definition."""
    sim = np.asarray(sim, dtype=np.float64)
    txt2img = np.asarray(txt2img)
    n, m = sim.shape
    i2t = []
    for i in range(n):
        best = None
        for j in range(m):
            if txt2img[j] != i:
                continue
            rank = 1 + sum(1 for g in range(m) if g != j and sim[i, g] >= sim[i, j])
            best = rank if best is None else min(best, rank)
        i2t.append(best)
    t2i = []
    for j in range(m):
        p = txt2img[j]
        t2i.append(1 + sum(1 for g in range(n) if g != p and sim[g, j] >= sim[p, j]))
    out = {}
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * np.mean(ranks <= k)
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks)
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        out[f"{name}_medr"] = float(np.floor(np.median(ranks)))
        out[f"{name}_meanr"] = float(np.mean(ranks))
    return out


def layouts(rng, n):
    yield np.repeat(np.arange(n), 5)                          # 5 captions each, consecutive
    yield np.arange(n)                                        # one caption each
    counts = rng.integers(1, 4, size=n)                       # 1-3 captions each, shuffled
    t = np.repeat(np.arange(n), counts)
    yield rng.permutation(t)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("quantise", [False, True])
def test_matches_reference(seed, quantise):
    rng = np.random.default_rng(seed)
    n = 13
    for txt2img in layouts(rng, n):
        sim = rng.normal(size=(n, len(txt2img)))
        if quantise:  # many ties
            sim = np.round(sim)
        got = evaluate(sim, txt2img)
        ref = reference_evaluate(sim, txt2img)
        assert set(got) == set(METRIC_KEYS)
        for k in METRIC_KEYS:
            assert got[k] == pytest.approx(ref[k]), k


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(20, 100)).astype(np.float32)
    t = np.repeat(np.arange(20), 5)
    assert evaluate(sim, t) == evaluate(torch.from_numpy(sim), torch.from_numpy(t))


def test_constant_scores_earn_nothing():
    t = np.repeat(np.arange(20), 5)
    out = evaluate(np.zeros((20, 100)), t)
    assert out["rsum"] == 0.0
    assert out["t2i_medr"] == 20 and out["i2t_medr"] == 100


def test_perfect_scores():
    t = np.repeat(np.arange(10), 5)
    sim = (t[None, :] == np.arange(10)[:, None]).astype(float)
    sim += np.linspace(0, 0.1, 50)[None, :]  # distinct scores: no ties among positives
    out = evaluate(sim, t)
    assert out["rsum"] == 600.0 and out["i2t_meanr"] == 1.0 and out["t2i_meanr"] == 1.0
    # tied positives count against each other: each image's best caption ranks 5th
    tied = evaluate((t[None, :] == np.arange(10)[:, None]).astype(float), t)
    assert tied["i2t_r1"] == 0.0 and tied["i2t_r5"] == 100.0 and tied["t2i_r1"] == 100.0


def test_ranks_shapes_and_custom_ks():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(7, 21))
    t = np.repeat(np.arange(7), 3)
    assert i2t_ranks(sim, t).shape == (7,)
    assert t2i_ranks(sim, t).shape == (21,)
    out = evaluate(sim, t, ks=(1, 3))
    assert "i2t_r3" in out and "i2t_r5" not in out


def test_folds_average_consecutive_blocks():
    rng = np.random.default_rng(5)
    n = 50
    t = np.repeat(np.arange(n), 5)
    sim = rng.normal(size=(n, 5 * n))
    got = evaluate_folds(sim, t, folds=5)
    parts = []
    for f in range(5):
        imgs = np.arange(10 * f, 10 * f + 10)
        caps = np.nonzero(np.isin(t, imgs))[0]
        parts.append(reference_evaluate(sim[np.ix_(imgs, caps)], t[caps] - 10 * f))
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(np.mean([p[k] for p in parts])), k
    # one fold is the full evaluation
    assert evaluate_folds(sim, t, folds=1) == pytest.approx(evaluate(sim, t))


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((2, 2), np.nan), [0, 1])
    with pytest.raises(ValueError, match="txt2img"):
        evaluate(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="folds"):
        evaluate_folds(np.zeros((2, 2)), [0, 1], folds=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("chunk", [64, 600 * 280])
def test_blocked_counts_match_dense_counts(monkeypatch, dtype, chunk):
    # tiny blocks force many row blocks; 280-row blocks exceed the 255 rows a uint8 partial sum holds
    import pillargraph.metrics as metrics
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(0)
    n = 300
    txt2img = torch.randperm(2 * n, generator=g) % n
    sim = torch.randint(0, 5, (n, 2 * n), generator=g).to(dtype)  # many ties
    pos = sim[txt2img, torch.arange(2 * n)]
    best = torch.full((n,), -1.0, dtype=dtype).scatter_reduce(0, txt2img, pos, "amax")
    assert torch.equal(t2i_ranks(sim, txt2img), (sim >= pos[None]).sum(0))
    assert torch.equal(i2t_ranks(sim, txt2img), (sim >= best[:, None]).sum(1))
    assert torch.equal(t2i_ranks(sim.T.contiguous().T, txt2img), t2i_ranks(sim, txt2img))


def test_evaluate_lists_matches_dense_recalls():
    from pillargraph.data import NeighborLists
    from pillargraph.metrics import evaluate_lists
    g = torch.Generator().manual_seed(3)
    for per in (1, 3, 5):
        n = 30
        t2i = torch.arange(n).repeat_interleave(per)
        sim = torch.randn(n, n * per, generator=g)
        sim[:, :4] = sim[:, 4:8]  # some exact ties
        sim = sim.round(decimals=1)  # many ties
        from pillargraph import SimilarityBundle
        b = SimilarityBundle(sim_i2t=sim, txt2img=t2i)
        lists = NeighborLists.from_bundle(b, k=12)
        got, ref = evaluate_lists(lists), evaluate(b)
        for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
            # lists never report more recall than the dense truth, and agree unless ties straddle the cut
            assert got[key] <= ref[key] + 1e-9
        full = NeighborLists.from_bundle(b, k=n)  # t2i lists complete
        assert evaluate_lists(full, ks=(1, 5, 10))["t2i_r10"] == pytest.approx(ref["t2i_r10"])
    # continuous scores: exact agreement
    sim = torch.randn(40, 80, generator=g)
    b = SimilarityBundle(sim_i2t=sim, txt2img=torch.arange(40).repeat_interleave(2))
    got, ref = evaluate_lists(NeighborLists.from_bundle(b, k=11)), evaluate(b)
    for key in got:
        assert got[key] == pytest.approx(ref[key])
    with pytest.raises(ValueError, match="depth"):
        evaluate_lists(NeighborLists.from_bundle(b, k=10))
