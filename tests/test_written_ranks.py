import itertools

import pytest
import torch

from pillargraph import evaluate
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.metrics import i2t_ranks
from pillargraph.rerank import OUTPUTS, DenseFusion, combine, rerank_scores, write_back
from pillargraph.written_ranks import WrittenRanks, pair_slots

from .test_rerank import RandomScorer, random_bundle


def variant(seed):
    """Random dev splits: plain, with tied scores, in float64, with a separate sim_t2i."""
    dev = random_bundle(n=30, per=3, seed=seed)
    if seed % 4 == 1:
        q = {f: (getattr(dev, f) * 4).round() / 4 for f in ("sim_i2t", "sim_i2i", "sim_t2t")}
        dev = dev.replace(**q)
    if seed % 4 == 2:
        dev = dev.replace(sim_i2t=dev.sim_i2t.double())
    if seed % 4 == 3:
        g = torch.Generator().manual_seed(seed)
        dev = dev.replace(sim_t2i=(dev.sim_i2t.T + 0.01 * torch.randn(dev.num_texts, dev.num_images, generator=g)))
    return dev


@pytest.mark.parametrize("seed", range(4))
def test_dense_fusion_equals_evaluate_of_combine_bit_for_bit(seed):
    dev = variant(seed)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    scored = rerank_scores(RandomScorer(builder, seed), dev, builder)
    search = DenseFusion(dev, scored)
    for output in OUTPUTS:
        for wi, wt in itertools.product((0.0, 0.3, 1.0), (0.0, 0.6, 1.0)):
            expected = evaluate(combine(dev, scored, wi, wt, output))
            got = search.metrics(wi, wt, output)
            assert got == expected and list(got) == list(expected)


def test_written_ranks_follow_the_written_matrix():
    dev = variant(1)  # ties
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(dev, "i2t")
    g = ds.graphs
    rows, cols = g.query_index, g.node_index[:, g.candidate_mask]
    captions = torch.arange(dev.num_texts)
    ranker = WrittenRanks(dev.sim_i2t, rows, cols, dev.txt2img, captions)
    for seed in range(3):
        learned = torch.randn(len(ds), g.num_nodes, generator=torch.Generator().manual_seed(seed))
        written = write_back(dev.sim_i2t, g, learned, 1.0)
        assert torch.equal(ranker.ranks(written[rows[:, None], cols]), i2t_ranks(written, dev.txt2img))


def test_pair_slots_finds_pairs_and_misses():
    rows, cols = torch.tensor([3, 1]), torch.tensor([[0, 2], [2, 4]])
    slots = pair_slots(rows, cols, 5, torch.tensor([1, 3, 3, 0]), torch.tensor([4, 2, 4, 0]))
    assert slots.tolist() == [3, 1, -1, -1]
    assert pair_slots(rows[:0], cols[:0], 5, torch.tensor([1]), torch.tensor([2])).tolist() == [-1]
