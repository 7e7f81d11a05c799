"""Training-free re-rankers as node features: values, flags, episodes, parsing, refusals."""
import pytest
import torch

from pillargraph import SimilarityBundle
from pillargraph.baselines import get_reranker
from pillargraph.data import EpisodicSimilarity, NeighborLists
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.graphs.node_features import is_transductive, num_node_features, split_node_features
from pillargraph.graphs.priors import parse_prior

from ..helpers.bundles import random_bundle, random_score_bundle
from ..helpers.graph_reference import assert_rank_columns

CFG = dict(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
DUAL = "prior:dual_softmax(temperature=0.1)"


def prior_columns(builder, graphs, group):
    """The three columns of ``group`` in built graphs."""
    start = builder.num_pillar_features + sum(3 if g.startswith("prior:") else {"rank": 3, "reciprocal": 2}[g]
                                              for g in builder.node_features[:builder.node_features.index(group)])
    return graphs.x[..., start:start + 3]


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_prior_columns_are_the_rank_features_of_the_method_scores(direction):
    b = random_score_bundle(seed=3)
    builder = PillarGraphBuilder(**CFG, node_features=("rank", DUAL))
    g = builder.build(b, direction).graphs
    scored = get_reranker("dual_softmax", temperature=0.1)(b)[direction]
    scored = scored if direction == "i2t" else scored.T        # rows: queries
    x = prior_columns(builder, g, DUAL)
    assert torch.equal(x[:, 0], torch.zeros_like(x[:, 0]))      # the query node
    for q in range(g.num_graphs):
        cands = g.node_index[q, 1:]
        assert_rank_columns(x[q, 1:], scored[q, cands], z_atol=1e-4)


def test_a_prior_that_reorders_differs_from_the_base_rank_group():
    b = random_bundle(n=12, per=3, seed=4)
    builder = PillarGraphBuilder(**CFG, node_features=("rank", "prior:gnn_rerank(k1=4, k2=2)"))
    g = builder.build(b, "t2i").graphs
    rank = g.x[..., builder.num_pillar_features:builder.num_pillar_features + 3]
    prior = prior_columns(builder, g, "prior:gnn_rerank(k1=4, k2=2)")
    assert not torch.allclose(rank[:, 1:, 1], prior[:, 1:, 1])  # the method re-orders some candidates


def test_episodes_are_scored_one_by_one():
    eps = [random_bundle(n=8, per=3, seed=s) for s in (1, 2)]
    builder = PillarGraphBuilder(**CFG, node_features=(DUAL,))
    whole = builder.build(EpisodicSimilarity(eps), "i2t").graphs
    for e, b in enumerate(eps):
        alone = PillarGraphBuilder(**CFG, node_features=(DUAL,)).build(b, "i2t").graphs
        torch.testing.assert_close(whole.x[e * 8:(e + 1) * 8], alone.x, atol=1e-5, rtol=0)


def test_mirrors_carry_prior_columns():
    b = random_bundle(seed=1)
    builder = PillarGraphBuilder(**CFG, node_features=(DUAL,))
    ds, t2i = builder.build(b, "i2t"), builder.build(b, "t2i")
    captions = torch.arange(5)
    mirror = builder.mirror(b, ds.graphs[b.txt2img[captions]], captions, t2i.pillars[captions])
    assert mirror.x.shape[-1] == builder.num_features
    assert torch.isfinite(mirror.x).all()


def test_flags_parsing_and_counts():
    assert is_transductive([DUAL]) and is_transductive(["rank", "prior:krnn"])
    assert not is_transductive(["rank", "prior:alpha_qe"])        # a query-side method, not transductive
    assert not PillarGraphBuilder(**CFG, node_features=("prior:dba",)).transductive
    assert num_node_features(["rank", DUAL, "prior:krnn"]) == 9
    assert parse_prior("prior:gnn_rerank(k1=10, k2=3)") == ("gnn_rerank", {"k1": 10, "k2": 3})
    assert parse_prior("prior:krnn") == ("krnn", {})
    assert split_node_features("rank, prior:gnn_rerank(k1=10, k2=3),reciprocal") == (
        "rank", "prior:gnn_rerank(k1=10, k2=3)", "reciprocal")
    # fixed groups first, priors in the order given
    assert PillarGraphBuilder(**CFG, node_features=("prior:krnn", "rank", DUAL)).node_features == (
        "rank", "prior:krnn", DUAL)


@pytest.mark.parametrize("group, message", [
    ("prior:nope", "unknown method"),
    ("prior:krnn(k1_i2t=)", "not a number"),
    ("prior:krnn(5)", "key=value"),
    ("prior:", "cannot read prior"),
    ("prior:dual_softmax(tempo=1)", "bad parameters"),
    ("prior:nnn", "needs a query bank"),
])
def test_bad_priors_are_refused_at_construction(group, message):
    with pytest.raises(ValueError, match=message):
        PillarGraphBuilder(**CFG, node_features=(group,))


LIST_PRIORS = [DUAL, "prior:gnn_rerank(k1=4, k2=2)", "prior:alpha_qe(n=3)", "prior:dba(k=3)",
               "prior:dba(k=2, weighting='alpha')"]


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
@pytest.mark.parametrize("group", LIST_PRIORS)
def test_list_priors_equal_the_dense_ones_when_the_lists_hold_every_item(group, direction):
    b = random_score_bundle(n=10, seed=6)
    complete = NeighborLists.from_bundle(b, k=b.num_texts)  # every list holds the whole gallery
    builder = PillarGraphBuilder(**CFG, node_features=("rank", group))
    dense = builder.build(b, direction).graphs
    lists = PillarGraphBuilder(**builder.config).build(complete, direction).graphs
    assert torch.equal(dense.node_index, lists.node_index)
    torch.testing.assert_close(prior_columns(builder, lists, group), prior_columns(builder, dense, group),
                               atol=1e-5, rtol=0)
    # mirrored lists read pairs outside the lists' prefixes: the same columns there too
    caps = torch.arange(3)

    def mirror(data):
        fresh = PillarGraphBuilder(**builder.config)
        i2t, t2i = fresh.build(data, "i2t"), fresh.build(data, "t2i")
        return fresh.mirror(data, i2t.graphs[b.txt2img[caps]], caps, t2i.pillars[caps],
                            torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(mirror(complete), mirror(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("group", LIST_PRIORS)
def test_list_pair_scores_equal_the_dense_method_for_any_pair(group):
    from pillargraph.baselines.lists import list_scores
    from pillargraph.graphs.priors import prior_reranker
    b = random_score_bundle(n=9, seed=8)
    method = prior_reranker(group)
    dense = method(b)
    scores = list_scores(method, NeighborLists.from_bundle(b, k=b.num_texts))
    rows, cols = torch.arange(b.num_images)[:, None], torch.arange(b.num_texts)[None, :]
    torch.testing.assert_close(scores.gather("i2t", rows, cols).double(), dense["i2t"], atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.gather("t2i", cols.T, rows.T).double(), dense["t2i"].T, atol=1e-5, rtol=0)


def test_priors_without_a_list_form_are_refused_on_lists():
    b = random_bundle(seed=2)
    lists = NeighborLists.from_bundle(b, k=8)
    with pytest.raises(ValueError, match="prior krnn on neighbour lists: krnn: needs dense scores"):
        PillarGraphBuilder(**CFG, node_features=("prior:krnn(k1_i2t=5, k1_t2i=5)",)).build(lists, "i2t")


def test_scale_invariance_of_a_scale_invariant_prior():
    b = random_score_bundle(seed=5)
    scaled = SimilarityBundle(sim_i2t=b.sim_i2t * 1e6, txt2img=b.txt2img, sim_i2i=b.sim_i2i * 1e6,
                              sim_t2t=b.sim_t2t * 1e6)
    group = "prior:krnn(k1_i2t=5, k1_t2i=5)"
    x, xs = (prior_columns(PillarGraphBuilder(**CFG, node_features=(group,)),
                           PillarGraphBuilder(**CFG, node_features=(group,)).build(data, "i2t").graphs, group)
             for data in (b, scaled))
    torch.testing.assert_close(x, xs, atol=1e-5, rtol=0)
