"""Candidate features beyond the pillar space: definitions, invariances, ties, mirrors."""
import math

import pytest
import torch

from pillargraph import SimilarityBundle
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.graphs.node_features import check_node_features, num_node_features

from ..helpers.bundles import random_score_bundle as random_bundle
from ..helpers.graph_reference import assert_rank_columns

CFG = dict(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)


def extra(bundle, direction, groups=("rank", "reciprocal"), **kw):
    builder = PillarGraphBuilder(**CFG, node_features=groups, **kw)
    g = builder.build(bundle, direction).graphs
    return builder, g, g.x[..., builder.num_pillar_features:]


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_features_match_a_plain_reference(direction):
    b = random_bundle(seed=2)
    builder, g, x = extra(b, direction, reciprocal_depth=5)
    sim = b.sim_i2t if direction == "i2t" else b.sim_i2t.T
    assert x.shape[-1] == 5 and builder.num_features == builder.num_pillar_features + 5
    assert torch.equal(x[:, 0], torch.zeros_like(x[:, 0]))  # the query node
    for q in range(g.num_graphs):
        cands = g.node_index[q, 1:]
        assert_rank_columns(x[q, 1:], sim[q, cands], z_atol=1e-5)
        for j, u in enumerate(cands.tolist()):
            column = sim[:, u]                       # every query's score against candidate u
            r = min(int((column >= sim[q, u]).sum()), 5)  # tie-pessimistic, capped at the depth
            assert float(x[q, 1 + j, 3]) == pytest.approx(math.log1p(r) / math.log1p(5), abs=1e-6)
            assert float(x[q, 1 + j, 4]) == pytest.approx(1 / r, abs=1e-6)


def test_scaling_and_all_equal_scores():
    b = random_bundle(seed=5)
    scaled = SimilarityBundle(sim_i2t=b.sim_i2t * 1e30, txt2img=b.txt2img, sim_i2i=b.sim_i2i * 1e30,
                              sim_t2t=b.sim_t2t * 1e30)
    for direction in ("i2t", "t2i"):
        _, _, x = extra(b, direction)
        _, _, xs = extra(scaled, direction)
        torch.testing.assert_close(x, xs, atol=1e-5, rtol=0)
    flat = SimilarityBundle(sim_i2t=torch.zeros_like(b.sim_i2t), txt2img=b.txt2img,
                            sim_i2i=torch.zeros_like(b.sim_i2i), sim_t2t=torch.zeros_like(b.sim_t2t))
    for direction in ("i2t", "t2i"):
        _, g, x = extra(flat, direction)
        cand = x[:, 1:]
        # every candidate of every query looks the same: nothing tells positions apart
        assert torch.equal(cand, cand[:1, :1].expand_as(cand))


def test_mirrors_carry_the_features_and_validation():
    b = random_bundle(seed=1)
    builder = PillarGraphBuilder(**CFG, node_features=("reciprocal", "rank"))
    assert builder.node_features == ("rank", "reciprocal") and builder.transductive
    assert not PillarGraphBuilder(**CFG, node_features=("rank",)).transductive
    ds = builder.build(b, "i2t")
    t2i = builder.build(b, "t2i")
    captions = torch.arange(5)
    mirror = builder.mirror(b, ds.graphs[b.txt2img[captions]], captions, t2i.pillars[captions])
    assert mirror.x.shape[-1] == builder.num_features
    # the mirrored list's features are computed in its own direction, like a built graph's
    assert mirror.direction == "t2i"
    with pytest.raises(ValueError, match="unknown group"):
        check_node_features(["rank", "bm25"])
    with pytest.raises(ValueError, match="repeated"):
        check_node_features(["rank", "rank"])
    assert num_node_features(["rank", "reciprocal"]) == 5
