import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle
from pillargraph.data.neighbors import (NeighborLists, faiss_available, topk_from_matrix,
                                        topk_neighbors)
from pillargraph.data.source import KINDS, DenseSimilarity, SimilaritySource

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


def reference_topk(sim, k, exclude_self=False):
    """Dense reference: stable descending sort (ties -> lower column first), truncated."""
    sim = sim.clone()
    if exclude_self:
        sim.fill_diagonal_(float("-inf"))
    val, idx = torch.sort(sim, dim=1, descending=True, stable=True)
    return idx[:, :k], val[:, :k]


def cosine(a, b):
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return a @ b.T


def embeddings(seed, n=40, m=120, d=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=dtype)
    txt = torch.randn(m, d, generator=g, dtype=dtype)
    return img, txt, torch.arange(m) % n


# ------------------------------------------------------------------------ chunked top-k
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_topk_neighbors_equals_dense(chunk_size, exclude_self):
    img, txt, _ = embeddings(0)
    gallery = img if exclude_self else txt
    k = 9
    idx, val = topk_neighbors(img, gallery, k, chunk_size=chunk_size, exclude_self=exclude_self,
                              backend="torch")
    ref_idx, ref_val = reference_topk(cosine(img, gallery), k, exclude_self)
    assert idx.dtype == torch.long and idx.shape == (40, k)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(val, ref_val)
    # on continuous scores this is also plain torch.topk
    assert torch.equal(idx, torch.topk(cosine(img, gallery) - (torch.eye(40) * 9 if exclude_self else 0),
                                       k).indices)
    if exclude_self:
        assert not bool((idx == torch.arange(40)[:, None]).any())


@pytest.mark.parametrize("chunk_size", [1, 5, 33])
def test_ties_are_broken_towards_lower_index(chunk_size):
    # quantised scores: many ties, including at the k-th position
    g = torch.Generator().manual_seed(3)
    sim = torch.randint(0, 4, (30, 25), generator=g).double()
    for exclude_self in (False, True):
        m = sim[:, :25] if not exclude_self else sim[:25, :25]
        idx, val = topk_from_matrix(m, 6, chunk_size, exclude_self=exclude_self)
        ref_idx, ref_val = reference_topk(m, 6, exclude_self)
        assert torch.equal(idx, ref_idx)
        assert torch.equal(val, ref_val)


def test_ties_in_embeddings():
    # vectors with four entries of +-1 have norm 2: every cosine is an exact multiple of 1/4,
    # so many scores tie exactly, whatever the order of the floating-point sums
    g = torch.Generator().manual_seed(4)

    def sparse_signs(n):
        x = torch.zeros(n, 8, dtype=torch.float64)
        cols = torch.rand(n, 8, generator=g).argsort(dim=1)[:, :4]
        signs = torch.randint(0, 2, (n, 4), generator=g).double() * 2 - 1
        return x.scatter_(1, cols, signs)

    q, gallery = sparse_signs(20), sparse_signs(50)
    for exclude_self, gal in ((False, gallery), (True, q)):
        idx, val = topk_neighbors(q, gal, 7, chunk_size=3, exclude_self=exclude_self, backend="torch")
        ref_idx, ref_val = reference_topk((q / 2) @ (gal / 2).T, 7, exclude_self)
        assert torch.equal(idx, ref_idx)
        assert torch.equal(val, ref_val)


def test_topk_from_matrix_numpy_and_transposed_view():
    img, txt, _ = embeddings(1)
    sim = cosine(img, txt)
    for mat in (sim, sim.T, sim.numpy(), np.asfortranarray(sim.numpy().T)):
        ref = reference_topk(torch.as_tensor(np.ascontiguousarray(mat)), 11)
        idx, val = topk_from_matrix(mat, 11, chunk_size=13)
        assert torch.equal(idx, ref[0])
        torch.testing.assert_close(val, ref[1])


def test_topk_from_matrix_does_not_modify_input():
    sim = torch.rand(8, 8, dtype=torch.float64)
    before = sim.clone()
    topk_from_matrix(sim, 3, chunk_size=8, exclude_self=True)
    assert torch.equal(sim, before)


def test_float32_and_numpy_inputs():
    img, txt, _ = embeddings(2, dtype=torch.float32)
    idx, val = topk_neighbors(img.numpy(), txt.numpy(), 4, backend="torch")
    assert val.dtype == torch.float32
    ref_idx, ref_val = reference_topk(cosine(img, txt), 4)
    torch.testing.assert_close(val, ref_val)
    assert (idx == ref_idx).float().mean() > 0.99  # float32 rounding may swap near-ties


@needs_faiss
@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_backend_matches_torch(exclude_self):
    img, txt, _ = embeddings(5, n=60, m=300, dtype=torch.float32)
    gallery = img if exclude_self else txt
    fi, fv = topk_neighbors(img, gallery, 10, exclude_self=exclude_self, backend="faiss", chunk_size=16)
    ti, tv = topk_neighbors(img.double(), gallery.double(), 10, exclude_self=exclude_self,
                            backend="torch")
    assert fi.dtype == torch.long and fv.dtype == torch.float32
    torch.testing.assert_close(fv.double(), tv, atol=1e-5, rtol=0)
    assert torch.equal(fi, ti)


def test_faiss_missing_is_a_clear_error(monkeypatch):
    import pillargraph.data.neighbors as nb
    monkeypatch.setattr(nb, "_import_faiss", lambda: None)
    img, txt, _ = embeddings(0, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend: 'faiss' needs"):
        topk_neighbors(img, txt, 3, backend="faiss")
    idx, _ = topk_neighbors(img, txt, 3, backend="auto")  # falls back to torch
    assert idx.shape == (40, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k:"),
    (dict(k=121), "k:"),
    (dict(k=3, backend="annoy"), "backend:"),
    (dict(k=3, chunk_size=0), "chunk_size:"),
    (dict(k=3, exclude_self=True), "exclude_self:"),
])
def test_topk_neighbors_errors(kwargs, match):
    img, txt, _ = embeddings(0)
    with pytest.raises(ValueError, match=match):
        topk_neighbors(img, txt, **kwargs)


def test_topk_input_errors():
    img, txt, _ = embeddings(0)
    with pytest.raises(ValueError, match="gallery: dimension"):
        topk_neighbors(img, txt[:, :5], 3)
    bad = img.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="queries: .*non-finite"):
        topk_neighbors(bad, txt, 3)
    with pytest.raises(ValueError, match="queries: expected a float"):
        topk_neighbors(torch.ones(3, 2, dtype=torch.long), txt[:, :2], 1)
    with pytest.raises(ValueError, match="k:"):
        topk_neighbors(img, img, 40, exclude_self=True)
    with pytest.raises(ValueError, match="matrix: .*non-finite"):
        topk_from_matrix(torch.tensor([[0.0, float("inf")]]), 1)
    with pytest.raises(ValueError, match="exclude_self: needs a square"):
        topk_from_matrix(torch.zeros(2, 3), 1, exclude_self=True)


# ----------------------------------------------------------------------- NeighborLists
def test_neighbor_lists_match_dense_source():
    img, txt, t2i = embeddings(6)
    img_intra = torch.randn(40, 7, dtype=torch.float64)
    txt_intra = torch.randn(120, 5, dtype=torch.float64)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=15, img_intra_emb=img_intra,
                                       txt_intra_emb=txt_intra, backend="torch")
    assert isinstance(nl, SimilaritySource)
    dense = DenseSimilarity(SimilarityBundle(sim_i2t=cosine(img, txt), txt2img=t2i,
                                             sim_i2i=cosine(img_intra, img_intra),
                                             sim_t2t=cosine(txt_intra, txt_intra)))
    rows = torch.tensor([3, 0, 3, 17])
    for kind in KINDS:
        for k in (1, 15):
            i1, s1 = nl.topk(kind, k)
            i2, s2 = dense.topk(kind, k)
            assert torch.equal(i1, i2), kind
            torch.testing.assert_close(s1, s2)
        i1, s1 = nl.topk(kind, 4, rows)
        i2, s2 = dense.topk(kind, 4, rows)
        assert torch.equal(i1, i2) and torch.allclose(s1, s2)
    assert nl.num_images == 40 and nl.num_texts == 120 and torch.equal(nl.txt2img, t2i)


def test_k_is_capped_at_gallery_and_topk_depth_error():
    img, txt, t2i = embeddings(7, n=8, m=24)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k={"i2t": 30, "t2i": 5, "i2i": 3, "t2t": 2})
    assert [nl.depth(kind) for kind in KINDS] == [24, 5, 3, 2]
    with pytest.raises(ValueError, match=r"k: 6 .* top 5 t2i"):
        nl.topk("t2i", 6)
    with pytest.raises(ValueError, match="kind:"):
        nl.topk("x2y", 1)
    with pytest.raises(ValueError, match="rows:"):
        nl.topk("i2t", 1, torch.tensor([8]))
    with pytest.raises(ValueError, match="k: unknown kind"):
        NeighborLists.from_embeddings(img, txt, t2i, k={"i2x": 3})


def test_gather_exact_with_embeddings():
    img, txt, t2i = embeddings(8)
    txt_intra = torch.randn(120, 6, dtype=torch.float64)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=5, txt_intra_emb=txt_intra)
    dense = DenseSimilarity(SimilarityBundle(sim_i2t=cosine(img, txt), txt2img=t2i,
                                             sim_i2i=cosine(img, img),
                                             sim_t2t=cosine(txt_intra, txt_intra)))
    g = torch.Generator().manual_seed(0)
    for kind in KINDS:
        nr, nc = dense.matrix(kind).shape
        rows = torch.randint(0, nr, (6, 1, 3), generator=g)
        cols = torch.randint(0, nc, (4, 1), generator=g)
        got = nl.gather(kind, rows, cols)
        assert got.shape == (6, 4, 3)
        torch.testing.assert_close(got, dense.gather(kind, rows, cols))
        # every (row, column) pair of each batch item, as pillar features ask: batched products
        for rs, cs in (((6, 5, 1), (6, 1, 4)), ((1, 5, 1), (3, 1, 4)), ((2, 3, 5, 1), (2, 3, 1, 4))):
            rows, cols = torch.randint(0, nr, rs, generator=g), torch.randint(0, nc, cs, generator=g)
            got = nl.gather(kind, rows, cols)
            assert got.shape == torch.broadcast_shapes(rs, cs)
            torch.testing.assert_close(got, dense.gather(kind, rows, cols))


def plain_gather(sim, k, rows, cols, transposed=None):
    """Per-pair reference: the stored value if the pair is in the row's (or the column's) list,
    else the smallest score stored for the row."""
    idx, val = reference_topk(sim, k)
    out = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        row = idx[r].tolist()
        if c in row:
            out.append(float(val[r, row.index(c)]))
        elif transposed is not None and r in transposed[0][c].tolist():
            out.append(float(transposed[1][c, transposed[0][c].tolist().index(r)]))
        else:
            out.append(float(val[r, -1]))
    return torch.tensor(out, dtype=sim.dtype)


def test_gather_lookup_and_fill_rule():
    img, txt, t2i = embeddings(9, n=30, m=90)
    bundle = SimilarityBundle.from_embeddings(img, txt, t2i, keep_embeddings=False)
    k = 6
    nl = NeighborLists.from_bundle(bundle, k=k, chunk_size=7)
    assert not nl.has_embeddings and nl.symmetric_intra
    dense = DenseSimilarity(bundle)
    g = torch.Generator().manual_seed(1)
    for kind in KINDS:
        m = dense.matrix(kind)
        other = {"i2t": "t2i", "t2i": "i2t"}.get(kind, kind)
        rows = torch.randint(0, m.shape[0], (400,), generator=g)
        cols = torch.randint(0, m.shape[1], (400,), generator=g)
        # include every stored pair of a few rows, so hits are certain
        stored_idx, _ = reference_topk(m, k)
        rows = torch.cat([rows, torch.arange(5).repeat_interleave(k)])
        cols = torch.cat([cols, stored_idx[:5].reshape(-1)])
        got = nl.gather(kind, rows, cols)
        ref = plain_gather(m, k, rows, cols, reference_topk(dense.matrix(other), k))
        torch.testing.assert_close(got, ref)
        # stored pairs are exact
        in_list = (stored_idx[rows] == cols[:, None]).any(dim=1)
        torch.testing.assert_close(got[in_list], m[rows[in_list], cols[in_list]])
        # every value is an upper bound of the truth
        assert bool((got >= m[rows, cols] - 1e-12).all())


def test_gather_without_transposed_lookup_for_asymmetric_intra():
    g = torch.Generator().manual_seed(2)
    n, m = 12, 24
    sim_i2i = torch.rand(n, n, generator=g, dtype=torch.float64)  # not symmetric
    bundle = SimilarityBundle(sim_i2t=torch.rand(n, m, generator=g, dtype=torch.float64),
                              txt2img=torch.arange(m) % n, sim_i2i=sim_i2i)
    nl = NeighborLists.from_bundle(bundle, k=3)
    assert not nl.symmetric_intra and not nl.has_kind("t2t")
    rows, cols = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)
    torch.testing.assert_close(nl.gather("i2i", rows, cols), plain_gather(sim_i2i, 3, rows, cols))
    with pytest.raises(ValueError, match="t2t_index: .*no t2t lists"):
        nl.topk("t2t", 1)


def test_gather_errors():
    img, txt, t2i = embeddings(0)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=3)
    with pytest.raises(ValueError, match="cols: indices must lie in"):
        nl.gather("i2t", torch.tensor([0]), torch.tensor([120]))
    with pytest.raises(ValueError, match="rows: expected an integer"):
        nl.gather("i2t", torch.tensor([0.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="cols: shape"):
        nl.gather("i2t", torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("keep", [True, False])
def test_save_load_round_trip(tmp_path, keep):
    img, txt, t2i = embeddings(10)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=7, txt_intra_emb=torch.randn(120, 3).double(),
                                       keep_embeddings=keep)
    path = nl.save(tmp_path / "sub" / "lists.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lists.npz"]  # no temp file left
    back = NeighborLists.load(path)
    assert back.has_embeddings == keep and back.symmetric_intra
    for kind in KINDS:
        for a, b in zip(nl.lists(kind), back.lists(kind)):
            assert torch.equal(a, b)
    rows, cols = torch.arange(40)[:, None], torch.arange(120)[None]
    assert torch.equal(nl.gather("t2t", cols.T, cols), back.gather("t2t", cols.T, cols))
    assert torch.equal(nl.gather("i2t", rows, cols), back.gather("i2t", rows, cols))
    with np.load(path, allow_pickle=False) as data:
        expected = {"txt2img", "symmetric_intra"} | {f"{k}_{f}" for k in KINDS for f in ("index", "score")}
        if keep:
            expected |= {"img_emb", "txt_emb", "txt_intra_emb"}
        assert set(data.files) == expected


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        NeighborLists.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "a.npz", txt2img=np.zeros(3, dtype=np.int64), extra=np.zeros(1))
    with pytest.raises(ValueError, match="unknown key"):
        NeighborLists.load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", txt2img=np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="missing required key 'i2t_index'"):
        NeighborLists.load(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .npz"):
        NeighborLists.load(tmp_path / "c.npz")
    img, txt, t2i = embeddings(0)
    with pytest.raises(ValueError, match="path: expected a .npz"):
        NeighborLists.from_embeddings(img, txt, t2i, k=2).save(tmp_path / "x.pt")


def valid_fields():
    img, txt, t2i = embeddings(11, n=6, m=12, d=4)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=4)
    return nl._state()


@pytest.mark.parametrize("field, change, match", [
    ("txt2img", lambda s: s["txt2img"].float(), "txt2img: expected an integer"),
    ("txt2img", lambda s: torch.zeros(12, dtype=torch.long), "txt2img: 5 image"),
    ("txt2img", lambda s: s["txt2img"] + 1, r"txt2img: values must lie in \[0, 6\)"),
    ("i2t_index", lambda s: s["i2t_index"][:, :0], r"i2t_index: expected shape \(6 x k\) with 1 <= k <= 12"),
    ("i2t_index", lambda s: s["i2t_index"].float(), "i2t_index: expected an integer"),
    ("t2i_index", lambda s: s["t2i_index"] + 6, r"t2i_index: values must lie in \[0, 6\)"),
    ("i2i_index", lambda s: s["i2i_index"][:, [0, 0, 1, 2]], "i2i_index: row 0 lists a column"),
    ("t2t_score", lambda s: s["t2t_score"][:, :3], "t2t_score: expected shape"),
    ("t2t_score", lambda s: s["t2t_score"].flip(1), "t2t_score: row 0 is not sorted"),
    ("i2t_score", lambda s: s["i2t_score"].long(), "i2t_score: expected a float"),
    ("i2t_score", lambda s: torch.full_like(s["i2t_score"], float("nan")), "i2t_score: contains"),
    ("t2i_score", lambda s: None, "t2i_score: is required"),
    ("i2i_score", lambda s: None, "i2i_score: missing while"),
    ("img_emb", lambda s: s["img_emb"][:5], "img_emb: expected 6 rows"),
    ("txt_emb", lambda s: None, "txt_emb: img_emb and txt_emb must be given together"),
    ("txt_emb", lambda s: s["txt_emb"][:, :3], "txt_emb: dimension 3 differs"),
    ("txt_intra_emb", lambda s: torch.ones(11, 2, dtype=torch.float64), "txt_intra_emb: expected 12"),
])
def test_validation_errors(field, change, match):
    fields = valid_fields()
    NeighborLists(**fields)  # the unchanged fields are valid
    fields[field] = change(fields)
    with pytest.raises(ValueError, match=match):
        NeighborLists(**fields)


def test_to_and_repr():
    img, txt, t2i = embeddings(12, n=5, m=10, d=3)
    nl = NeighborLists.from_embeddings(img, txt, t2i, k=2)
    assert repr(nl) == ("NeighborLists(num_images=5, num_texts=10, k=(i2t=2, t2i=2, i2i=2, t2t=2), "
                        "embeddings=True)")
    moved = nl.to("cpu")
    assert torch.equal(moved.topk("i2t", 2)[0], nl.topk("i2t", 2)[0])


def test_faiss_blocks_are_never_small_by_default():
    from pillargraph.data.neighbors import FAISS_BLOCK_ROWS, chunk_rows
    assert chunk_rows(None, 566_435, "faiss") == FAISS_BLOCK_ROWS      # the torch budget would give 59 rows
    assert chunk_rows(None, 566_435) == (1 << 25) // 566_435
    assert chunk_rows(None, 100, "faiss") == (1 << 25) // 100           # the budget when it is larger
    assert chunk_rows(7, 566_435, "faiss") == 7                          # an explicit size is kept


# ------------------------------------------------------------------------ inner products (BM25-style scores)
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_topk_neighbors_dot_is_the_plain_inner_product(chunk_size):
    import scipy.sparse
    img, txt, _ = embeddings(6)
    img, txt = img.abs() * torch.linspace(0.5, 3, 40, dtype=img.dtype)[:, None], txt.abs()
    ref_idx, ref_val = reference_topk(img @ txt.T, 5)
    idx, val = topk_neighbors(img, txt, 5, chunk_size=chunk_size, backend="torch", similarity="dot")
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(val, ref_val)
    sparse_txt = scipy.sparse.csr_matrix(np.where(txt.numpy() > 0.8, txt.numpy(), 0).astype(np.float32))
    dense_txt = torch.as_tensor(sparse_txt.toarray(), dtype=torch.float64)
    ref_idx, ref_val = reference_topk(img @ dense_txt.T, 5)
    idx, val = topk_neighbors(img.float().numpy(), sparse_txt, 5, chunk_size=chunk_size, similarity="dot")
    torch.testing.assert_close(val.double(), ref_val, rtol=1e-5, atol=1e-5)
    assert (idx == ref_idx).float().mean() > 0.99  # float32 rounding may swap near-ties
    with pytest.raises(ValueError, match=r"similarity: expected one of \['cosine', 'dot'\]"):
        topk_neighbors(img, txt, 5, similarity="euclidean")


def test_lists_with_dot_cross_scores_keep_intra_cosine_and_drop_cross_embeddings():
    img, txt, t2i = embeddings(7)
    img_intra, txt_intra, _ = embeddings(8, d=6)
    lists = NeighborLists.from_embeddings(img.abs(), txt.abs(), t2i, 6, img_intra, txt_intra, backend="torch",
                                          cross_similarity="dot")
    mats = dict(i2t=img.abs() @ txt.abs().T, t2i=txt.abs() @ img.abs().T, i2i=cosine(img_intra, img_intra),
                t2t=cosine(txt_intra, txt_intra))
    for kind, m in mats.items():
        ref_idx, ref_val = reference_topk(m, 6)
        idx, val = lists.topk(kind, 6)
        assert torch.equal(idx, ref_idx), kind
        torch.testing.assert_close(val, ref_val)
        # a stored pair is gathered exactly; i2t/t2i from the lists (cosines of the rows would be wrong)
        torch.testing.assert_close(lists.gather(kind, torch.arange(m.shape[0])[:, None], idx), ref_val)
    assert not lists.has_embeddings
    with pytest.raises(ValueError, match="img_intra_emb, txt_intra_emb: needed"):
        NeighborLists.from_embeddings(img, txt, t2i, 6, cross_similarity="dot")
    with pytest.raises(ValueError, match="cross_similarity: expected one of"):
        NeighborLists.from_embeddings(img, txt, t2i, 6, cross_similarity="cos")
