import warnings

import numpy as np
import pytest
import scipy.sparse
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.metrics import (MULTI_POSITIVE_KEYS, Positives, evaluate_positives,
                                 positive_ranks)


def reference(sim, rel_i2t, rel_t2i, unreach_i2t=None, unreach_t2i=None, ks=(1, 5, 10)):
    """Plain per-query loops, written from the definitions (ties count against the query)."""
    out = {}
    for d, s, rel, extra in (("i2t", sim["i2t"], rel_i2t, unreach_i2t),
                             ("t2i", sim["t2i"].T, rel_t2i.T, unreach_t2i)):
        hits = {k: [] for k in ks}
        aps, rps = [], []
        for q in range(s.shape[0]):
            pos = [g for g in range(s.shape[1]) if rel[q, g]]
            big_r = len(pos) + (0 if extra is None else int(extra[q]))
            if big_r == 0:
                continue
            ranks = sorted(sum(1 for g in range(s.shape[1]) if s[q, g] >= s[q, p]) for p in pos)
            for k in ks:
                hits[k].append(bool(ranks) and ranks[0] <= k)
            ap = sum(sum(1 for r2 in ranks if r2 <= r) / r for r in ranks if r <= big_r)
            aps.append(ap / big_r)
            rps.append(sum(1 for r in ranks if r <= big_r) / big_r)
        for k in ks:
            out[f"{d}_r{k}"] = 100.0 * np.mean(hits[k])
        out[f"map_at_r_{d}"] = 100.0 * np.mean(aps)
        out[f"rprecision_{d}"] = 100.0 * np.mean(rps)
    return out


def official_style(s, rel, big_r):
    """mAP@R and R-P as the ECCV Caption evaluator computes them, from a sorted list (no ties)."""
    ranked = list(np.argsort(-s, kind="stable"))
    gt = set(np.flatnonzero(rel).tolist())
    precs = [len(set(ranked[:r]) & gt) / r if ranked[r - 1] in gt else 0.0 for r in range(1, big_r + 1)]
    return np.mean(precs), len(set(ranked[:big_r]) & gt) / big_r


def random_problem(seed, n=9, m=23, quantise=False, density=0.15):
    rng = np.random.default_rng(seed)
    sims = {d: rng.normal(size=(n, m)) for d in ("i2t", "t2i")}
    if quantise:  # many ties, also between positives
        sims = {d: np.round(s) for d, s in sims.items()}
    rel_i2t = rng.random((n, m)) < density
    rel_t2i = rng.random((n, m)) < density
    rel_i2t[0] = False          # a query without positives is skipped
    rel_t2i[:, 1] = False
    return rng, sims, rel_i2t, rel_t2i


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("quantise", [False, True])
def test_matches_reference_on_random_inputs(seed, quantise):
    rng, sims, rel_i2t, rel_t2i = random_problem(seed, quantise=quantise)
    un_i2t = rng.integers(0, 3, size=rel_i2t.shape[0])
    un_t2i = rng.integers(0, 2, size=rel_i2t.shape[1])
    pos = Positives(rel_i2t, rel_t2i, i2t_unreachable=un_i2t, t2i_unreachable=un_t2i)
    got = evaluate_positives(sims, pos, ks=(1, 2, 5))
    want = reference(sims, rel_i2t, rel_t2i, un_i2t, un_t2i, ks=(1, 2, 5))
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    # one matrix for both directions
    got = evaluate_positives(sims["i2t"], pos)
    want = reference({"i2t": sims["i2t"], "t2i": sims["i2t"]}, rel_i2t, rel_t2i, un_i2t, un_t2i)
    assert list(got) == list(MULTI_POSITIVE_KEYS)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("seed", [0, 1])
def test_without_ties_equals_the_ranked_list_definition(seed):
    _, sims, rel_i2t, _ = random_problem(seed, n=6, m=40, density=0.3)
    got = evaluate_positives(sims["i2t"], Positives(rel_i2t))
    maps, rps = [], []
    for q in range(6):
        if rel_i2t[q].any():
            mp, rp = official_style(sims["i2t"][q], rel_i2t[q], int(rel_i2t[q].sum()))
            maps.append(mp)
            rps.append(rp)
    assert got["map_at_r_i2t"] == pytest.approx(100 * np.mean(maps))
    assert got["rprecision_i2t"] == pytest.approx(100 * np.mean(rps))


@pytest.mark.parametrize("quantise", [False, True])
def test_single_positive_recall_equals_evaluate(quantise):
    rng = np.random.default_rng(4)
    t = rng.permutation(np.repeat(np.arange(12), 3))
    sim = rng.normal(size=(12, 36))
    if quantise:
        sim = np.round(sim)
    got = evaluate_positives(sim, Positives.from_txt2img(t))
    base = evaluate(sim, t)
    for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert got[k] == pytest.approx(base[k]), k
    # one positive per caption query: mAP@R = R-P = R@1
    assert got["map_at_r_t2i"] == pytest.approx(got["t2i_r1"])
    assert got["rprecision_t2i"] == pytest.approx(got["t2i_r1"])


def test_known_answers():
    # one image query, gallery of 6 captions scored 6, 5, ..., 1 (caption 0 ranks first)
    sim = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])

    def run(cols, unreachable=0):
        pos = Positives((np.zeros(len(cols), int), np.array(cols)), (np.array([0]), np.array([0])),
                        shape=(1, 6), i2t_unreachable=[unreachable])
        return evaluate_positives(sim, pos, ks=(1, 2, 3))

    out = run([0, 2])                      # ranks 1, 3; R = 2
    assert out["map_at_r_i2t"] == pytest.approx(50.0)      # (1/1 + 0) / 2
    assert out["rprecision_i2t"] == pytest.approx(50.0)
    assert (out["i2t_r1"], out["i2t_r2"]) == (100.0, 100.0)
    out = run([1, 2])                      # ranks 2, 3
    assert out["map_at_r_i2t"] == pytest.approx(25.0)      # (0 + 1/2) / 2
    assert (out["i2t_r1"], out["i2t_r2"]) == (0.0, 100.0)
    out = run([0, 1], unreachable=1)       # ranks 1, 2 and one positive outside the gallery: R = 3
    assert out["map_at_r_i2t"] == pytest.approx(200.0 / 3)
    assert out["rprecision_i2t"] == pytest.approx(200.0 / 3)
    out = run([], unreachable=2)           # nothing retrievable, but the query counts
    assert out["i2t_r3"] == 0.0 and out["map_at_r_i2t"] == 0.0
    # ties: two positives tied with one negative at the top both rank 3
    tied = np.array([[1.0, 1.0, 1.0, 0.0]])
    pos = Positives((np.array([0, 0]), np.array([0, 1])), shape=(1, 4))
    out = evaluate_positives(tied, pos, ks=(1, 2, 3))
    assert (out["i2t_r2"], out["i2t_r3"]) == (0.0, 100.0)
    assert out["rprecision_i2t"] == 0.0 and out["map_at_r_i2t"] == 0.0  # R = 2 < rank 3
    query, rank = positive_ranks(tied, pos, "i2t")
    assert query.tolist() == [0, 0] and rank.tolist() == [3, 3]


def test_perfect_and_reversed_rankings():
    rng = np.random.default_rng(5)
    rel = rng.random((8, 30)) < 0.2
    rel[np.arange(8), np.arange(8)] = True
    noise = rng.random((8, 30)) * 0.5
    # positives score above 1, the rest below 0.5: perfect along rows and columns
    perfect = evaluate_positives(rel + noise, Positives(rel))
    assert all(v == 100.0 for v in perfect.values()), perfect
    reversed_ = evaluate_positives(-(rel + noise), Positives(rel))
    assert reversed_["i2t_r1"] == 0.0 and reversed_["map_at_r_i2t"] == 0.0


def test_every_input_form_gives_the_same_positives():
    rng = np.random.default_rng(6)
    rel = rng.random((7, 11)) < 0.3
    rows, cols = np.nonzero(rel)
    dense = torch.from_numpy(rel.astype(np.float32))
    with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = dense.to_sparse_csr()
    forms = [rel, rel.astype(np.float32), torch.from_numpy(rel), scipy.sparse.csr_matrix(rel),
             scipy.sparse.coo_matrix(rel.astype(float)), dense.to_sparse(), csr]
    want = Positives((rows, cols), shape=rel.shape)
    for form in forms:
        got = Positives(form)
        assert got.shape == rel.shape
        assert torch.equal(got.i2t, want.i2t) and torch.equal(got.t2i, want.t2i), type(form)
    # duplicate pairs count once; explicit zeros in a sparse matrix are not positives
    dup = Positives((np.r_[rows, rows], np.r_[cols, cols]), shape=rel.shape)
    assert torch.equal(dup.i2t, want.i2t)
    sp = scipy.sparse.csr_matrix(rel.astype(float))
    sp.data[:] = 0
    assert Positives(sp).i2t.shape == (2, 0)
    # i2t is sorted by image, t2i by caption
    assert torch.equal(want.i2t[0], torch.sort(want.i2t[0], stable=True).values)
    assert torch.equal(want.t2i[1], torch.sort(want.t2i[1], stable=True).values)


def test_torch_numpy_and_bundle_agree():
    rng = np.random.default_rng(7)
    t = np.repeat(np.arange(10), 3)
    sim = rng.normal(size=(10, 30)).astype(np.float32)
    pos = Positives(rng.random((10, 30)) < 0.2)
    a = evaluate_positives(sim, pos)
    assert a == evaluate_positives(torch.from_numpy(sim), pos)
    assert a == evaluate_positives(SimilarityBundle(sim_i2t=sim, txt2img=t), pos)
    assert a == evaluate_positives({"i2t": sim, "t2i": sim}, pos)


def test_bundle_with_its_own_t2i_scores_ranks_captions_by_them():
    """A re-ranked bundle stores sim_t2i [M, N]; t2i metrics must read it, not sim_i2t.T."""
    rng, sims, rel_i2t, rel_t2i = random_problem(5)
    bundle = SimilarityBundle(sim_i2t=sims["i2t"], txt2img=np.arange(23) % 9, sim_t2i=sims["t2i"].T)
    pos = Positives(rel_i2t, rel_t2i)
    got = evaluate_positives(bundle, pos)
    assert got == evaluate_positives({"i2t": sims["i2t"], "t2i": sims["t2i"]}, pos)
    assert got == pytest.approx(reference(sims, rel_i2t, rel_t2i))
    assert got != evaluate_positives(sims["i2t"], pos)
    query, rank = positive_ranks(bundle, pos, "t2i")
    assert torch.equal(rank, positive_ranks({"i2t": sims["i2t"], "t2i": sims["t2i"]}, pos, "t2i")[1])


@pytest.mark.parametrize("chunk", [7, 1 << 24])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_chunking_does_not_change_ranks(monkeypatch, chunk, dtype):
    import pillargraph.metrics as metrics
    rng = np.random.default_rng(8)
    sim = np.round(rng.normal(size=(40, 300)), 1).astype(dtype)
    pos = Positives(rng.random((40, 300)) < 0.05, rng.random((40, 300)) < 0.05)
    want = {d: positive_ranks(sim, pos, d) for d in ("i2t", "t2i")}
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)
    for d in ("i2t", "t2i"):
        q, r = positive_ranks(sim, pos, d)
        assert torch.equal(q, want[d][0]) and torch.equal(r, want[d][1])
        s = torch.from_numpy(sim if d == "i2t" else sim.T)
        img, cap = pos.pairs(d)
        qq, gg = (img, cap) if d == "i2t" else (cap, img)
        brute = (s[qq] >= s[qq, gg][:, None]).sum(1)
        order = torch.argsort(qq * 1000 + brute)
        assert torch.equal(r, brute[order])
        for cap in (1, 4, 299, 400):  # capped ranks: the top-k path (i2t) and the clamped exact one
            q, r = positive_ranks(sim, pos, d, max_rank=cap)
            assert torch.equal(q, want[d][0]) and torch.equal(r, want[d][1].clamp_max(cap + 1))


def test_save_and_load_roundtrip(tmp_path):
    rng = np.random.default_rng(9)
    pos = Positives(rng.random((5, 8)) < 0.4, rng.random((5, 8)) < 0.4,
                    i2t_unreachable=[0, 1, 0, 2, 0])
    path = pos.save(tmp_path / "pos.npz")
    back = Positives.load(path)
    for f in ("i2t", "t2i", "i2t_unreachable", "t2i_unreachable"):
        assert torch.equal(getattr(back, f), getattr(pos, f)), f
    assert back.shape == (5, 8)
    assert "i2t=" in repr(back) and "(5, 8)" in repr(back)
    # without a shape key, the caller's shape is used
    np.savez(tmp_path / "bare.npz", i2t_rows=[0, 1], i2t_cols=[2, 3], t2i_rows=[1], t2i_cols=[0])
    assert Positives.load(tmp_path / "bare.npz", shape=(2, 4)).shape == (2, 4)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="positives file not found"):
        Positives.load(tmp_path / "missing.npz", shape=(2, 2))
    np.savez(tmp_path / "a.npz", i2t_rows=[0], i2t_cols=[0], t2i_rows=[0])
    with pytest.raises(ValueError, match="missing required key 't2i_cols'"):
        Positives.load(tmp_path / "a.npz", shape=(2, 2))
    np.savez(tmp_path / "b.npz", i2t_rows=[0], i2t_cols=[0], t2i_rows=[0], t2i_cols=[0], rel=[1])
    with pytest.raises(ValueError, match="unknown key"):
        Positives.load(tmp_path / "b.npz", shape=(2, 2))
    np.savez(tmp_path / "c.npz", i2t_rows=[0], i2t_cols=[5], t2i_rows=[0], t2i_cols=[0])
    with pytest.raises(ValueError, match=r"c.npz: i2t: caption indices must lie in \[0, 2\)"):
        Positives.load(tmp_path / "c.npz", shape=(2, 2))
    with pytest.raises(ValueError, match="shape: required"):
        Positives.load(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", i2t_rows=[0], i2t_cols=[0], t2i_rows=[0], t2i_cols=[0], shape=[3, 3])
    with pytest.raises(ValueError, match=r"\(3, 3\) do not match the scores' \(2, 2\)"):
        Positives.load(tmp_path / "d.npz", shape=(2, 2))
    np.savez(tmp_path / "e.npz", i2t_rows=[0.5], i2t_cols=[0], t2i_rows=[0], t2i_cols=[0])
    with pytest.raises(ValueError, match="i2t rows: expected an integer dtype"):
        Positives.load(tmp_path / "e.npz", shape=(2, 2))


def test_bad_input():
    rel = np.eye(3, 4, dtype=bool)
    with pytest.raises(ValueError, match="image indices must lie"):
        Positives(([0, 3], [0, 1]), shape=(3, 4))
    with pytest.raises(ValueError, match="caption indices must lie"):
        Positives(([0, 1], [0, -1]), shape=(3, 4))
    with pytest.raises(ValueError, match="2 rows but 1 cols"):
        Positives(([0, 1], [0]), shape=(3, 4))
    with pytest.raises(ValueError, match="a tuple"):
        Positives(([0], [0], [0]), shape=(3, 4))
    with pytest.raises(ValueError, match="shape: required"):
        Positives(([0], [0]))
    with pytest.raises(ValueError, match=r"t2i: relevance of shape \(4, 3\) does not match"):
        Positives(rel, rel.T)
    with pytest.raises(ValueError, match="expected an \\[N, M\\] relevance"):
        Positives(np.zeros(5))
    with pytest.raises(ValueError, match="i2t: contains NaN"):
        Positives(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="i2t_unreachable: expected shape \\(3,\\)"):
        Positives(rel, i2t_unreachable=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        Positives(rel, t2i_unreachable=[0, -1, 0, 0])
    pos = Positives(rel)
    with pytest.raises(ValueError, match=r"positives: of shape \(3, 4\), but the scores are \(3, 5\)"):
        evaluate_positives(np.zeros((3, 5)), pos)
    with pytest.raises(ValueError, match="scores: contains NaN"):
        evaluate_positives(np.full((3, 4), np.nan), pos)
    with pytest.raises(ValueError, match="expected the keys"):
        evaluate_positives({"i2t": np.zeros((3, 4))}, pos)
    with pytest.raises(ValueError, match="ks"):
        evaluate_positives(np.zeros((3, 4)), pos, ks=(0,))
    with pytest.raises(ValueError, match="expected a Positives"):
        evaluate_positives(np.zeros((3, 4)), rel)
    with pytest.raises(ValueError, match="no t2i query has a positive"):
        evaluate_positives(np.zeros((3, 4)), Positives(rel, np.zeros((3, 4), bool)))
    with pytest.raises(ValueError, match="direction"):
        positive_ranks(np.zeros((3, 4)), pos, "x2y")
    with pytest.raises(ValueError, match="max_rank"):
        positive_ranks(np.zeros((3, 4)), pos, "i2t", max_rank=0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(10)
    sim = torch.from_numpy(np.round(rng.normal(size=(30, 90)), 1))
    pos = Positives(rng.random((30, 90)) < 0.1, rng.random((30, 90)) < 0.1)
    want = evaluate_positives(sim, pos)
    got = evaluate_positives(sim.cuda(), pos)
    for k in want:
        assert got[k] == pytest.approx(want[k]), k
