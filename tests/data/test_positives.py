"""ECCV Caption / CxC positives in pillargraph's indices, checked against the official evaluator.

``eccv_caption.Metrics`` evaluates ranked lists of COCO ids. Every test below turns pillargraph
score matrices into such lists and asks both sides for the same numbers. The official code reads
a list only up to ``max(R, K)`` (R-Precision, mAP@R and R@K slice it), so each list holds the
query's top ``TOP`` items; ``test_truncated_lists_change_nothing`` checks that on full lists. Its
COCO 1K recall keeps only the fold's items of each list, so the 1K lists hold the fold's top 10.
"""
import inspect
import warnings

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle, evaluate, evaluate_folds
from pillargraph.data.captions import captions_root, load_caption_split
from pillargraph.data.positives import (COCO5K_SHAPE, ECCV_CXC_KEYS, check_coco5k_bundle, coco5k_anchor,
                                        coco5k_eccv_cxc, coco5k_ids, coco5k_positives, evaluate_coco5k)
from pillargraph.metrics import Positives, evaluate_positives

N, M = COCO5K_SHAPE
TOP = 64
KS = (1, 5, 10)


@pytest.fixture(scope="module")
def eccv_caption():
    """The official package (the ``eval`` extra); every test that needs it skips without it."""
    with warnings.catch_warnings():  # it warns when ujson is missing
        warnings.simplefilter("ignore", UserWarning)
        return pytest.importorskip("eccv_caption")


@pytest.fixture(scope="module")
def official(eccv_caption):
    return eccv_caption.Metrics()


@pytest.fixture(scope="module")
def ids(eccv_caption):
    return coco5k_ids()


@pytest.fixture(scope="module")
def positives(eccv_caption):
    return {s: coco5k_positives(s) for s in ("original", "eccv", "cxc")}


def top_lists(rows, k, query_ids, item_ids):
    """{query id: [item ids, best first]} of the top ``k`` items of every row (one query a row)."""
    top = torch.topk(rows, k, dim=1).indices.numpy()
    return {int(q): item_ids[r].tolist() for q, r in zip(query_ids, top)}


def official_numbers(official, i2t, t2i_rows, ids, which=("coco1k", "coco5k", "cxc", "eccv")):
    """The official numbers (percent, pillargraph's key names) of image queries ranked by ``i2t``
    [N, M] and caption queries ranked by ``t2i_rows`` [M, N] (the t2i matrix, one row a query)."""
    img_ids, cap_ids = ids
    lists = {"i2t": top_lists(i2t, TOP, img_ids, cap_ids), "t2i": top_lists(t2i_rows, TOP, cap_ids, img_ids)}
    folds = {"i2t": {}, "t2i": {}}  # each query's top 10 within its own 1K fold
    for f in range(5):
        im, cp = slice(1000 * f, 1000 * (f + 1)), slice(5000 * f, 5000 * (f + 1))
        folds["i2t"].update(top_lists(i2t[im, cp], 10, img_ids[im], cap_ids[cp]))
        folds["t2i"].update(top_lists(t2i_rows[cp, im], 10, cap_ids[cp], img_ids[im]))
    calls = {"coco1k": (official.coco_1k_recalls, folds), "coco5k": (official.coco_5k_recalls, lists),
             "cxc": (official.cxc_recalls, lists)}
    out = {}
    for name in set(which) & set(calls):
        fn, arg = calls[name]
        for k in KS:
            res = fn(arg, "all", K=k)
            out.update({f"{name}_{d}_r{k}": 100 * res[d] for d in ("i2t", "t2i")})
    if "eccv" in which:
        res = official.eccv_metrics(lists, "all")
        for d in ("i2t", "t2i"):
            out[f"eccv_map_at_r_{d}"] = 100 * res["eccv_map_at_r"][d]
            out[f"eccv_rprecision_{d}"] = 100 * res["eccv_rprecision"][d]
            out[f"eccv_{d}_r1"] = 100 * res["eccv_r1"][d]
    return out


def our_numbers(scores, positives, which=("coco1k", "coco5k", "cxc", "eccv")):
    """pillargraph's numbers of ``{'i2t': [N, M], 't2i': [N, M]}`` under the same key names."""
    txt2img = torch.arange(M) // 5
    same = scores["i2t"] is scores["t2i"]
    out = {}
    for d in ("i2t",) if same else ("i2t", "t2i"):
        kept = ("i2t", "t2i") if same else (d,)
        for name, fn in (("coco5k", evaluate), ("coco1k", evaluate_folds)):
            if name in which:
                res = fn(scores[d], txt2img)
                out.update({f"{name}_{e}_r{k}": res[f"{e}_r{k}"] for e in kept for k in KS})
    if "cxc" in which:
        cxc = evaluate_positives(scores, positives["cxc"])
        out.update({f"cxc_{d}_r{k}": cxc[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS})
    if "eccv" in which:
        eccv = evaluate_positives(scores, positives["eccv"])
        out.update({f"eccv_{k}": eccv[k] for k in ("map_at_r_i2t", "map_at_r_t2i", "rprecision_i2t",
                                                   "rprecision_t2i", "i2t_r1", "t2i_r1")})
    return out


def assert_agree(ours, theirs):
    assert set(ours) == set(theirs)
    for k in sorted(theirs):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-6), k


def structured(pairs=None, sign=1, rows_are_captions=False, m=M):
    """Scores with a known order: ``f(i, j) + sign * m`` on the given (image, caption) pairs.

    ``f(i, j) = (7919 j + 104729 i) mod m`` is a permutation of each row and takes distinct values
    down each column (7919 and 104729 are primes, coprime to m = 25000 or 20000), so there are no
    ties and float32 holds every value exactly. The pairs come first (``sign=1``) or last
    (``sign=-1``). ``rows_are_captions`` builds the transpose ``[m, N]`` directly (a t2i matrix,
    one row a query).
    """
    a = (torch.arange(m) * 7919 % m).float()
    b = (torch.arange(N) * 104729 % m).float()
    s = torch.fmod(a[:, None] + b[None, :] if rows_are_captions else b[:, None] + a[None, :], m)
    if pairs is not None:
        img, cap = pairs
        s[(cap, img) if rows_are_captions else (img, cap)] += sign * m
    return s


@pytest.fixture(scope="module")
def noise():
    # float64: ties between 25,000 random scores of a row would be likely in float32
    return torch.rand(N, M, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ the id mapping
def test_ids_follow_the_caption_file_order(ids, official):
    img_ids, cap_ids = ids
    assert img_ids.shape == (N,) and cap_ids.shape == (M,)
    assert np.array_equal(cap_ids, official.coco_ids)
    for j in (0, 4, 5, 12345, M - 1):
        assert official.coco_gts["t2i"][int(cap_ids[j])] == [int(img_ids[j // 5])]


def test_original_positives_are_the_bundle_ground_truth(positives):
    want = Positives.from_txt2img(torch.arange(M) // 5)
    for d in ("i2t", "t2i"):
        assert torch.equal(positives["original"].pairs(d), want.pairs(d))


def test_positives_match_the_json_files(positives, ids, official):
    img_ids, cap_ids = ids
    for source, gts in (("eccv", official.eccv_gts), ("cxc", official.cxc_gts)):
        pos = positives[source]
        img, cap = pos.i2t
        captions = set(cap_ids.tolist())
        got = {}
        for i, j in zip(img.tolist(), cap.tolist()):
            got.setdefault(int(img_ids[i]), set()).add(int(cap_ids[j]))
        assert got == {q: set(vs) & captions for q, vs in gts["i2t"].items()}
        img, cap = pos.t2i
        got = {}
        for i, j in zip(img.tolist(), cap.tolist()):
            got.setdefault(int(cap_ids[j]), set()).add(int(img_ids[i]))
        assert got == {q: set(vs) for q, vs in gts["t2i"].items()}
        assert int(pos.i2t_unreachable.sum()) == (2 if source == "eccv" else 0)
    assert positives["eccv"].num_queries("i2t") == 1261
    assert positives["eccv"].num_queries("t2i") == 1332
    assert positives["cxc"].num_queries("t2i") == 24972   # CxC leaves out 28 captions


# ------------------------------------------------------------------ against the official evaluator
def test_random_rankings_agree_with_the_official_evaluator(official, ids, positives, noise):
    assert max(len(v) for g in (official.eccv_gts, official.cxc_gts) for v in g["i2t"].values()) <= TOP
    ours = our_numbers({"i2t": noise, "t2i": noise}, positives)
    assert_agree(ours, official_numbers(official, noise, noise.T, ids))
    assert len(ours) == 2 * 3 * len(KS) + 6


@pytest.mark.parametrize("sign", [1, -1])
def test_known_answers_for_eccv_and_cxc_agree_with_the_official_evaluator(official, ids, positives, sign):
    """ECCV positives first: 100 except where positives lie outside the split; last: 0."""
    eccv = positives["eccv"]
    i2t, t2i_rows = structured(eccv.i2t, sign), structured(eccv.t2i, sign, rows_are_captions=True)
    scores = {"i2t": i2t, "t2i": t2i_rows.T}
    ours = our_numbers(scores, positives, which=("eccv", "cxc"))
    assert_agree(ours, official_numbers(official, i2t, t2i_rows, ids, which=("eccv", "cxc")))
    if sign < 0:
        assert all(ours[k] == 0 for k in ours if k.startswith("eccv"))
        return
    r = eccv.num_positives("i2t")
    known = 100 * float(((r - eccv.i2t_unreachable)[r > 0].double() / r[r > 0]).mean())
    assert 99 < known < 100
    assert ours["eccv_map_at_r_i2t"] == pytest.approx(known) == ours["eccv_rprecision_i2t"]
    assert ours["eccv_map_at_r_t2i"] == 100 == ours["eccv_rprecision_t2i"] == ours["eccv_t2i_r1"]
    assert ours["eccv_i2t_r1"] == 100


def test_known_answers_for_coco_recalls_agree_with_the_official_evaluator(official, ids, positives):
    """The original pairs first: COCO 1K and 5K recalls are 100."""
    orig = positives["original"]
    s = structured(orig.i2t)
    ours = our_numbers({"i2t": s, "t2i": s}, positives, which=("coco1k", "coco5k"))
    theirs = official_numbers(official, s, structured(orig.t2i, rows_are_captions=True), ids,
                              which=("coco1k", "coco5k"))
    assert_agree(ours, theirs)
    assert all(v == 100 for v in ours.values())
    # and a ranking that misses them all (each image's own captions last)
    s = structured(orig.i2t, -1)
    ours = our_numbers({"i2t": s, "t2i": s}, positives, which=("coco5k",))
    theirs = official_numbers(official, s, structured(orig.t2i, -1, rows_are_captions=True), ids,
                              which=("coco5k",))
    assert_agree(ours, theirs)
    assert all(v == 0 for v in ours.values())


def test_truncated_lists_change_nothing(official, ids, noise):
    """The official numbers of a query from its top-TOP list equal those from its full list."""
    img_ids, cap_ids = ids
    gts = {q: official.eccv_gts["i2t"][q] for q in list(official.eccv_gts["i2t"])[:40]}
    rows = [int(np.flatnonzero(img_ids == q)[0]) for q in gts]
    order = torch.argsort(noise[rows], dim=1, descending=True).numpy()
    full = {q: cap_ids[o].tolist() for q, o in zip(gts, order)}
    cut = {q: v[:TOP] for q, v in full.items()}
    from eccv_caption._metrics import compute_eccv_metrics  # what Metrics.eccv_metrics calls

    assert compute_eccv_metrics(full, gts) == compute_eccv_metrics(cut, gts)


# ------------------------------------------------------------------ the caption proxy
def test_proxy_drops_anchor_positives(positives):
    split_anchor = 0
    for source in ("eccv", "cxc", "original"):
        full, proxy = positives[source], coco5k_positives(source, anchor=split_anchor)
        assert proxy.shape == (N, M - N)
        is_anchor = torch.arange(M) % 5 == split_anchor
        texts = (~is_anchor).nonzero().flatten()
        img, cap = full.i2t
        keep = ~is_anchor[cap]
        assert torch.equal(texts[proxy.i2t[1]], cap[keep]) and torch.equal(proxy.i2t[0], img[keep])
        img, cap = full.t2i
        keep = ~is_anchor[cap]
        assert torch.equal(texts[proxy.t2i[1]], cap[keep]) and torch.equal(proxy.t2i[0], img[keep])
        assert torch.equal(proxy.i2t_unreachable, full.i2t_unreachable)
    # every original caption of an image except its anchor stays an i2t positive
    assert torch.equal(coco5k_positives("original", anchor=3).num_positives("i2t"), torch.full((N,), 4))


def test_proxy_text_order_is_the_caption_proxy_order(eccv_caption):
    try:
        split = load_caption_split("coco_testall", captions_root())
    except FileNotFoundError:
        pytest.skip("real caption files (../shared/data/captions) not available")
    for anchor in (0, 2):
        _, texts, txt2img = split.anchor_split(anchor)
        proxy = coco5k_positives("original", anchor=anchor)
        assert torch.equal(proxy.i2t[0], txt2img[proxy.i2t[1]])  # the proxy's own ground truth


def test_missing_extra_fails_with_one_line_naming_it(monkeypatch):
    import importlib.util

    import pillargraph.data.positives as module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "eccv_caption" else real(name, *a))
    module._clear_caches()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"install the eval extra .*pillargraph\[eval\]"):
            coco5k_positives("eccv")
    finally:
        module._clear_caches()


def test_evaluate_coco5k_detects_the_index_space(noise, positives):
    assert inspect.signature(evaluate_coco5k).parameters["sources"].default == ("eccv", "cxc")
    full = evaluate_coco5k(noise, sources=("eccv",), ks=(1,))
    assert full == {f"eccv_{k}": v for k, v in evaluate_positives(noise, positives["eccv"], ks=(1,)).items()}
    proxy_scores = {"i2t": noise[:, :M - N], "t2i": noise[:, N:]}
    proxy = evaluate_coco5k(proxy_scores, sources=("eccv",), ks=(1, 5))
    want = evaluate_positives(proxy_scores, coco5k_positives("eccv", anchor=0), ks=(1, 5))
    assert proxy == {f"eccv_{k}": v for k, v in want.items()}
    assert {"eccv_map_at_r_i2t", "eccv_rprecision_t2i", "eccv_i2t_r1", "eccv_t2i_r5"} <= set(proxy)
    with pytest.raises(ValueError, match="neither the MS-COCO 5K test split"):
        evaluate_coco5k(noise[:100])
    with pytest.raises(ValueError, match="source"):
        evaluate_coco5k(noise, sources=("pmrp",))


def test_shape_and_bundle_checks():
    assert coco5k_anchor((N, M)) is None and coco5k_anchor((N, M - N), anchor=2) == 2
    with pytest.raises(ValueError, match=r"\(5000 x 20000\)"):
        coco5k_anchor((N, M - 1))

    class Fake:  # only the two fields the check reads
        sim_i2t = torch.zeros(N, M - N)
        txt2img = torch.arange(M - N) // 4

    assert check_coco5k_bundle(Fake()) == 0
    Fake.txt2img = torch.arange(M - N) % N
    with pytest.raises(ValueError, match="txt2img: not the MS-COCO 5K order"):
        check_coco5k_bundle(Fake())


# ---------------------------------------- the caption proxy against the official evaluator
def proxy_gts(gts, anchor_ids):
    """The official ground truth of a caption proxy, derived in the official id space: anchor
    captions leave the gallery (every i2t list) and stop being queries (t2i)."""
    i2t = {q: [c for c in vs if c not in anchor_ids] for q, vs in gts["i2t"].items()}
    return {"i2t": {q: vs for q, vs in i2t.items() if vs},
            "t2i": {q: vs for q, vs in gts["t2i"].items() if q not in anchor_ids}}


def official_proxy_numbers(eccv_caption, anchor, i2t, t2i_rows, ids):
    """:data:`ECCV_CXC_KEYS` from ``eccv_caption.Metrics`` on the proxy's ranked lists, its
    ECCV and CxC ground truth replaced by :func:`proxy_gts`. ``i2t`` is [N, M - N], ``t2i_rows``
    [M - N, N]; text ``j`` of the proxy is caption ``texts[j]`` of the split. ``anchor=None``:
    the split itself, with the official ground truth unchanged."""
    img_ids, cap_ids = ids
    is_anchor = np.arange(M) % 5 == (-1 if anchor is None else anchor)
    texts = np.flatnonzero(~is_anchor)
    official = eccv_caption.Metrics()
    anchor_ids = set(cap_ids[is_anchor].tolist())
    official.eccv_gts = proxy_gts(official.eccv_gts, anchor_ids)
    official.cxc_gts = proxy_gts(official.cxc_gts, anchor_ids)
    lists = {"i2t": top_lists(i2t, TOP, img_ids, cap_ids[texts]),
             "t2i": top_lists(t2i_rows, TOP, cap_ids[texts], img_ids)}
    res = official.eccv_metrics(lists, "all")
    cxc = official.cxc_recalls(lists, "all", K=1)
    out = {f"cxc_{d}_r1": 100 * cxc[d] for d in ("i2t", "t2i")}
    for d in ("i2t", "t2i"):
        out.update({f"eccv_map_at_r_{d}": 100 * res["eccv_map_at_r"][d],
                    f"eccv_rprecision_{d}": 100 * res["eccv_rprecision"][d],
                    f"eccv_{d}_r1": 100 * res["eccv_r1"][d]})
    return out


@pytest.mark.parametrize("anchor", [0, 3, None])
def test_proxy_random_rankings_agree_with_the_official_evaluator(eccv_caption, ids, noise, anchor):
    m = M if anchor is None else M - N
    i2t, t2i = noise[:, :m], noise.flip(1)[:, :m]  # two different rankings, images x texts
    ours = coco5k_eccv_cxc({"i2t": i2t, "t2i": t2i}, anchor=anchor)
    assert list(ours) == list(ECCV_CXC_KEYS)
    assert_agree(ours, official_proxy_numbers(eccv_caption, anchor, i2t, t2i.T, ids))


def test_proxy_known_answers_agree_with_the_official_evaluator(eccv_caption, ids):
    """The proxy's ECCV positives first: R-P, mAP@R and R@1 are 100 (i2t: but for the two
    positives outside the split); CxC t2i R@1 as well wherever CxC agrees with ECCV."""
    eccv = coco5k_positives("eccv", anchor=1)
    i2t = structured(eccv.i2t, m=M - N)
    t2i_rows = structured(eccv.t2i, rows_are_captions=True, m=M - N)
    ours = coco5k_eccv_cxc({"i2t": i2t, "t2i": t2i_rows.T}, anchor=1)
    assert_agree(ours, official_proxy_numbers(eccv_caption, 1, i2t, t2i_rows, ids))
    assert ours["eccv_map_at_r_t2i"] == ours["eccv_rprecision_t2i"] == ours["eccv_t2i_r1"] == 100
    assert ours["eccv_i2t_r1"] == 100 and 99 < ours["eccv_map_at_r_i2t"] < 100


def test_coco5k_eccv_cxc_accepts_every_form_of_a_result(eccv_caption, noise):
    """Bundle (own sim_t2i), per-direction dict and matrix + sim_t2i give the same numbers."""
    i2t, t2i = noise[:200, :800].float(), noise[200:400, :800].float()
    small = {"i2t": torch.zeros(N, M - N), "t2i": torch.zeros(N, M - N)}
    small["i2t"][:200, :800], small["t2i"][:200, :800] = i2t, t2i
    bundle = SimilarityBundle(sim_i2t=small["i2t"], txt2img=torch.arange(M - N) // 4,
                              sim_t2i=small["t2i"].T)
    want = coco5k_eccv_cxc(small, anchor=2)
    assert coco5k_eccv_cxc(bundle, anchor=2) == want
    assert coco5k_eccv_cxc(small["i2t"], 2, sim_t2i=small["t2i"].T) == want


def test_coco5k_eccv_cxc_rejects_bad_input(noise):
    proxy = noise[:, :M - N]
    for anchor, match in ((None, r"expected shape \(5000, 25000\) for the 5K split itself"),
                          (5, r"anchor: expected None .* \[0, 5\), got 5"),
                          (True, "anchor: expected"), ("0", "anchor: expected")):
        with pytest.raises(ValueError, match=match):
            coco5k_eccv_cxc(proxy, anchor)
    with pytest.raises(ValueError, match=r"expected shape \(5000, 20000\) for its caption proxy \(anchor 0\)"):
        coco5k_eccv_cxc(noise, 0)
    with pytest.raises(ValueError, match=r"sim_t2i: expected shape \(20000, 5000\)"):
        coco5k_eccv_cxc(proxy, 0, sim_t2i=proxy)
    with pytest.raises(ValueError, match="sim_t2i: give it with a plain i2t matrix only"):
        coco5k_eccv_cxc({"i2t": proxy, "t2i": proxy}, 0, sim_t2i=proxy.T)
