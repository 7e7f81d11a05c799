"""benchmarks/feature_probe.py: the per-direction probe learns from the candidate features alone."""
from dataclasses import replace

import torch

from benchmarks.feature_probe import FeatureProbe, fit_probe
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.losses import contrastive_loss
from pillargraph.modality import DIRECTIONS


def test_probe_reads_only_the_extra_columns_and_learns_them():
    train, _, _ = synthetic_splits(60, 20, 20, seed=3)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=8, k_t2i=4, overlap_neighbors=3, node_features=["rank"])
    graphs = {d: builder.build(train, d).graphs for d in DIRECTIONS}
    torch.manual_seed(0)
    probe = FeatureProbe(builder.num_extra_features)
    g = graphs["i2t"]
    scrambled = g.x.clone()
    scrambled[..., :-builder.num_extra_features] = torch.randn_like(scrambled[..., :-builder.num_extra_features])
    assert torch.equal(probe(g), probe(replace(g, x=scrambled)))  # pillar columns unread

    def loss() -> float:
        with torch.no_grad():
            return float(sum(contrastive_loss(probe(x), x.y, x.candidate_mask) for x in graphs.values()))
    before = loss()
    fit_probe(probe, graphs, steps=100, lr=0.05, tau=1.0)
    assert loss() < before - 0.1
    # the i2t head learned that a smaller base rank (column 1 of 'rank') means a better candidate
    assert float(probe.heads["i2t"].weight.detach()[0, 1]) < 0
