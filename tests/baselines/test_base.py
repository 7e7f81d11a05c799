import pytest
import torch

from pillargraph.baselines import (AlphaQE, Reranker, RetrievalView, available_rerankers,
                                   chunked_topk, get_reranker, reranker_resolver,
                                   resolve_chunk_size)


class _Echo(Reranker):
    """Returns the base scores plus the query index, to check the layout."""

    def rerank(self, view):
        self.seen.append(view)
        return view.sim + torch.arange(view.num_queries, dtype=view.sim.dtype)[:, None]


def test_resolver_normalises_names():
    for query in ("alpha_qe", "AlphaQE", "alpha-qe", "ALPHA QE", "aqe"):
        m = reranker_resolver(query, n=4)
        assert isinstance(m, AlphaQE) and m.n == 4
    inst = AlphaQE(n=2)
    assert get_reranker(inst) is inst
    assert isinstance(get_reranker(AlphaQE), AlphaQE)
    assert "alpha_qe" in available_rerankers()


def test_resolver_errors():
    with pytest.raises(ValueError, match="alpha_qe"):  # the choices are listed
        get_reranker("nope")
    with pytest.raises(ValueError, match="parameters"):
        get_reranker(AlphaQE(), n=3)
    with pytest.raises(ValueError, match="alpha_qe"):
        get_reranker("alpha_qe", k=3)
    with pytest.raises(ValueError):
        get_reranker(3)


def test_views_and_layout(make_bundle):
    b = make_bundle()
    m = _Echo()
    m.seen = []
    out = m(b)
    i2t, t2i = m.seen
    assert i2t.query_intra is b.sim_i2i and i2t.gallery_intra is b.sim_t2t
    assert t2i.query_intra is b.sim_t2t and t2i.gallery_intra is b.sim_i2i
    assert t2i.query_emb is b.txt_emb and t2i.gallery_emb is b.img_emb
    # i2t adds the image index to rows, t2i the caption index to columns
    torch.testing.assert_close(out["i2t"], b.sim_i2t + torch.arange(b.num_images)[:, None].double())
    torch.testing.assert_close(out["t2i"], b.sim_i2t + torch.arange(b.num_texts)[None, :].double())


def test_direction_validation(make_bundle):
    b = make_bundle()
    with pytest.raises(ValueError, match=r"\['i2t', 't2i'\]"):
        AlphaQE()(b, directions="x2y")
    with pytest.raises(ValueError, match="empty"):
        AlphaQE()(b, directions=[])
    with pytest.raises(ValueError, match="chunk_size"):
        AlphaQE()(b, chunk_size=0)
    with pytest.raises(ValueError, match="bundle"):
        AlphaQE()(b.sim_i2t)

    class OnlyI2T(_Echo):
        directions = ("i2t",)

    with pytest.raises(ValueError, match="supports only"):
        OnlyI2T()(b, directions="t2i")


def test_chunk_helpers():
    assert resolve_chunk_size(None, 10, 1, budget=4) == 4
    assert resolve_chunk_size(None, 3, 1, budget=100) == 3
    assert resolve_chunk_size(7, 3, 1) == 3
    assert resolve_chunk_size(None, 10, 1000, budget=10) == 1
    with pytest.raises(ValueError):
        resolve_chunk_size(True, 3, 1)
    x = torch.randn(9, 9, generator=torch.Generator().manual_seed(0))
    v, i = chunked_topk(x, 3, chunk_size=2, exclude_self=True)
    xm = x.clone()
    xm.fill_diagonal_(float("-inf"))
    rv, ri = xm.topk(3, dim=1)
    assert torch.equal(i, ri) and torch.equal(v, rv)
    with pytest.raises(ValueError, match="k"):
        chunked_topk(x, 9, exclude_self=True)


def test_view_for_bad_direction(make_bundle):
    with pytest.raises(ValueError, match="direction"):
        RetrievalView.from_bundle(make_bundle(), "both")
