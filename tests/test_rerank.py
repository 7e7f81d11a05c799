import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.rerank import rerank, select_fusion_weights, write_back

from .tiny import tiny_builder, tiny_model


def random_bundle(n=20, per=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(n, 8, generator=g), torch.randn(n * per, 8, generator=g)
    return SimilarityBundle.from_embeddings(img, txt, torch.arange(n).repeat_interleave(per))


def test_write_back_keeps_top_set_and_follows_learned_order():
    b = random_bundle()
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(b, "i2t")
    learned = torch.randn(len(ds), 6, generator=torch.Generator().manual_seed(1))
    out = write_back(b.sim_i2t, ds.graphs, learned, weight=1.0)
    cand = ds.graphs.node_index[:, 1:]
    for q in range(b.num_images):
        c = cand[q]
        top = out[q, c]
        rest = torch.ones(b.num_texts, dtype=torch.bool)
        rest[c] = False
        assert top.min() >= out[q, rest].max()                       # the top-K stays on top
        assert top.min() == pytest.approx(float(b.sim_i2t[q, c].min()))  # within the original range
        assert top.max() == pytest.approx(float(b.sim_i2t[q, c].max()))
        assert torch.equal(torch.argsort(top, descending=True), torch.argsort(learned[q, 1:], descending=True))
        assert torch.equal(out[q, rest], b.sim_i2t[q, rest])           # the rest is untouched


def test_weight_zero_is_the_base_ranking():
    b = random_bundle()
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(b, "i2t")
    out = write_back(b.sim_i2t, ds.graphs, torch.randn(len(ds), 6), weight=0.0)
    assert torch.allclose(out, b.sim_i2t, atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        write_back(b.sim_i2t, ds.graphs, torch.randn(len(ds), 6), weight=1.5)


def test_rerank_outputs_and_fusion(tiny_splits):
    train, dev, test = tiny_splits
    builder = tiny_builder()
    model = tiny_model(builder)
    base = evaluate(test)
    zero = rerank(model, test, builder, fusion=0.0)
    assert evaluate(zero) == pytest.approx(base)
    only_i2t = rerank(model, test, builder, fusion=1.0, output="i2t").sim_i2t
    only_t2i = rerank(model, test, builder, fusion=1.0, output="t2i").sim_i2t
    fused = rerank(model, test, builder, fusion=1.0).sim_i2t
    assert torch.allclose(fused, 0.5 * (only_i2t + only_t2i), atol=1e-6)
    # each direction changes only its own top lists: rows' top-7 for i2t, columns' top-3 for t2i
    changed = only_i2t != test.sim_i2t
    assert int(changed.sum(1).max()) <= 7
    assert int((only_t2i != test.sim_i2t).sum(0).max()) <= 3
    with pytest.raises(ValueError, match="output"):
        rerank(model, test, builder, output="both")
    choice = select_fusion_weights(model, dev, builder, grid=(0.0, 0.5, 1.0))
    assert choice.dev_rsum >= choice.base_rsum
    assert len(choice.table) == 9
    assert (choice.i2t, choice.t2i) in choice.table
    with pytest.raises(ValueError, match="builder"):
        rerank(tiny_model(builder), test)  # an untrained model carries no builder config
