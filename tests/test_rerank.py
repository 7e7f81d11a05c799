import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.rerank import rerank, select_fusion_weights, write_back

from .helpers.tiny import tiny_builder, tiny_model


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


class RandomScorer(torch.nn.Module):
    """Stands in for a trained model: random learned scores, a builder config and no training."""

    def __init__(self, builder, seed=0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.builder_config = builder.config
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch):
        return torch.randn(batch.num_graphs, batch.x.shape[1], generator=self.generator) + 0 * self.weight


def check_top_lists_kept(base_rows, out_rows, depth):
    """Each row's base top-``depth`` set stays above everything else, which keeps its base scores."""
    top = torch.topk(base_rows, depth, dim=1).indices
    inside = torch.zeros_like(base_rows, dtype=torch.bool).scatter_(1, top, True)
    low_inside = torch.where(inside, out_rows, torch.full_like(out_rows, float("inf"))).min(1).values
    high_outside = torch.where(inside, torch.full_like(out_rows, float("-inf")), out_rows).max(1).values
    assert bool((low_inside >= high_outside).all())
    assert torch.equal(out_rows[~inside], base_rows[~inside])


@pytest.mark.parametrize("output", ["fused", "directions", "i2t", "t2i"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_output_keeps_each_directions_top_lists(output, seed):
    test = random_bundle(n=20, per=3, seed=seed)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    out = rerank(RandomScorer(builder, seed), test, builder, fusion=1.0, output=output)
    check_top_lists_kept(test.sim_i2t, out.sim_i2t, 5)          # image queries: rows
    check_top_lists_kept(test.sim_i2t.T, out.t2i_scores, 3)     # caption queries: rows of sim_t2i
    changed_i2t = not torch.equal(out.sim_i2t, test.sim_i2t)
    changed_t2i = not torch.equal(out.t2i_scores, test.sim_i2t.T)
    assert changed_i2t == (output != "t2i") and changed_t2i == (output != "i2t")


def test_plain_average_would_break_the_top_lists():
    """Why the outputs are per direction: the paper's one-matrix average lifts outside items."""
    test = random_bundle(n=20, per=3, seed=0)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    out = rerank(RandomScorer(builder), test, builder, fusion=1.0, output="directions")
    average = 0.5 * (out.sim_i2t + out.t2i_scores.T)
    with pytest.raises(AssertionError):
        check_top_lists_kept(test.sim_i2t, average, 5)


def test_rerank_outputs_and_fusion(tiny_splits):
    train, dev, test = tiny_splits
    builder = tiny_builder()
    model = tiny_model(builder)
    base = evaluate(test)
    for output in ("fused", "directions"):
        assert evaluate(rerank(model, test, builder, fusion=0.0, output=output)) == pytest.approx(base)
    only_i2t = rerank(model, test, builder, fusion=1.0, output="i2t")
    only_t2i = rerank(model, test, builder, fusion=1.0, output="t2i")
    both = rerank(model, test, builder, fusion=1.0, output="directions")
    assert torch.equal(both.sim_i2t, only_i2t.sim_i2t) and torch.equal(both.sim_t2i, only_t2i.sim_t2i)
    # each direction changes only its own top lists: rows' top-7 for i2t, captions' top-3 for t2i
    assert int((only_i2t.sim_i2t != test.sim_i2t).sum(1).max()) <= 7
    assert int((only_t2i.sim_t2i != test.sim_i2t.T).sum(1).max()) <= 3
    with pytest.raises(ValueError, match="output"):
        rerank(model, test, builder, output="both")
    choice = select_fusion_weights(model, dev, builder, grid=(0.0, 0.5, 1.0))
    assert choice.dev_rsum >= choice.base_rsum
    assert len(choice.table) == 9
    assert (choice.i2t, choice.t2i) in choice.table
    with pytest.raises(ValueError, match="builder"):
        rerank(tiny_model(builder), test, fusion=1.0)  # an untrained model carries no builder config
    with pytest.raises(ValueError, match="carries no dev-selected fusion weights"):
        rerank(model, test, builder)  # no weight is assumed


@pytest.mark.parametrize("output", ["fused", "directions", "i2t", "t2i"])
def test_rerank_from_lists_equals_rerank_of_the_dense_bundle(output):
    from pillargraph.data import NeighborLists
    from pillargraph.metrics import evaluate_lists
    test = random_bundle(n=20, per=3, seed=4)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    lists = NeighborLists.from_bundle(test, k=16)
    dense = rerank(RandomScorer(builder, 7), test, builder, fusion=(0.7, 0.4), output=output)
    listed = rerank(RandomScorer(builder, 7), lists, builder, fusion=(0.7, 0.4), output=output)
    assert isinstance(listed, NeighborLists)
    for kind, rows in (("i2t", dense.sim_i2t), ("t2i", dense.t2i_scores)):
        idx, score = listed.lists(kind)
        torch.testing.assert_close(score, torch.topk(rows, 16, dim=1).values.to(score.dtype))
        torch.testing.assert_close(rows.gather(1, idx), score.to(rows.dtype))
    got, ref = evaluate_lists(listed), evaluate(dense)
    for key in got:
        assert got[key] == pytest.approx(ref[key])


def test_fusion_selection_chooses_the_output_mode_on_dev():
    from pillargraph.rerank import rerank_scores
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    grid = (0.0, 0.5, 1.0)
    winners = set()
    for seed in range(6):
        dev = random_bundle(n=20, per=3, seed=10 + seed)
        scored = rerank_scores(RandomScorer(builder, seed), dev, builder)
        single = {o: select_fusion_weights(None, dev, builder, grid=grid, output=o, scored=scored)
                  for o in ("fused", "directions")}
        both = select_fusion_weights(None, dev, builder, grid=grid, output=("fused", "directions"), scored=scored)
        assert both.by_output == {o: c.dev_rsum for o, c in single.items()}
        expected = "directions" if single["directions"].dev_rsum > single["fused"].dev_rsum + 1e-6 else "fused"
        chosen = single[expected]
        assert both.output == expected and both.dev_rsum == max(both.by_output.values())
        assert (both.i2t, both.t2i, both.table) == (chosen.i2t, chosen.t2i, chosen.table)
        assert both.base_rsum == pytest.approx(evaluate(dev)["rsum"])
        assert both.as_dict()["by_output"] == both.by_output
        winners.add(expected)
    assert winners == {"fused", "directions"}  # both branches of the choice were exercised
    # ties go to the mode listed first: with weight 0 only, every mode is the base ranking
    for order in (("directions", "fused"), ("fused", "directions")):
        tie = select_fusion_weights(None, dev, builder, grid=(0.0,), output=order, scored=scored)
        assert tie.output == order[0] and (tie.i2t, tie.t2i) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"output: unknown output mode\(s\) \['both'\]"):
        select_fusion_weights(None, dev, builder, output=("fused", "both"), scored=scored)
    with pytest.raises(ValueError, match="output: empty; name one or more output modes"):
        select_fusion_weights(None, dev, builder, output=(), scored=scored)


def test_best_fusion_weights_prefers_the_higher_rsum_then_the_smaller_weights():
    from pillargraph.rerank import best_fusion_weights
    assert best_fusion_weights({(0.0, 0.0): 400.0, (0.5, 1.0): 410.0, (1.0, 1.0): 405.0}) == (0.5, 1.0)
    # equal to 6 decimals: the pair nearer the base ranking wins
    assert best_fusion_weights({(1.0, 1.0): 410.0, (0.5, 0.5): 410.0 - 1e-9, (0.0, 0.0): 400.0}) == (0.5, 0.5)
