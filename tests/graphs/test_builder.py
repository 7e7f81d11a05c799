import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from pillargraph import SimilarityBundle
from pillargraph.graphs import (PillarGraphBuilder, QueryGraphDataset, from_hetero_batch,
                                overlap_counts)

from ..helpers.bundles import random_score_bundle as random_bundle
from ..helpers.graph_reference import query_graph


CONFIGS = [
    dict(num_pillars=5, k_i2t=6, k_t2i=4, overlap_neighbors=3, sparsity=0.8),
    dict(num_pillars=4, k_i2t=9, k_t2i=3, overlap_neighbors=5, sparsity=1.0, anchor="inter"),
    dict(num_pillars=3, k_i2t=5, k_t2i=5, overlap_neighbors=2, sparsity=0.5, anchor="intra",
         context_nodes=2),
    dict(num_pillars=6, k_i2t=7, k_t2i=4, overlap_neighbors=4, sparsity=0.8, include_self=False,
         context_nodes=1),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_batched_builder_matches_reference(cfg, direction):
    bundle = random_bundle(seed=len(cfg))
    builder = PillarGraphBuilder(**cfg)
    ds = builder.build(bundle, direction)
    g = ds.graphs
    assert len(ds) == (bundle.num_images if direction == "i2t" else bundle.num_texts)
    for q in range(len(ds)):
        ref = query_graph(bundle, direction, q, cfg["num_pillars"],
                          cfg["k_i2t"] if direction == "i2t" else cfg["k_t2i"],
                          cfg["overlap_neighbors"], cfg["sparsity"], cfg.get("anchor", "both"),
                          cfg.get("context_nodes", 0), cfg.get("include_self", True))
        assert g.node_index[q].tolist() == ref["nodes"]
        assert g.node_type.tolist() == ref["types"]
        np.testing.assert_allclose(g.x[q].numpy(), ref["x"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(g.adj[q].numpy(), ref["adj"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g.base_score[q].numpy(), ref["base"], rtol=1e-6)
        assert g.y[q].tolist() == ref["y"].tolist()
        assert int(g.query_index[q]) == q


def test_adjacency_properties():
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=8, overlap_neighbors=4).build(random_bundle(), "i2t")
    adj = ds.graphs.adj
    assert torch.allclose(adj.sum(-1), torch.ones(adj.shape[:2]), atol=1e-6)
    assert bool((adj.diagonal(dim1=1, dim2=2) > 0).all())
    nz = adj[adj > 0]
    assert bool((nz > 0).all())


def test_overlap_counts_against_sets():
    g = torch.Generator().manual_seed(1)
    lists = torch.stack([torch.randperm(30, generator=g)[:6] for _ in range(4 * 5)]).view(4, 5, 6)
    counts = overlap_counts(lists, chunk_size=3)
    for q in range(4):
        for a in range(5):
            for b in range(5):
                expect = len(set(lists[q, a].tolist()) & set(lists[q, b].tolist()))
                assert counts[q, a, b] == expect


def test_hetero_schema():
    bundle = random_bundle()
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3, context_nodes=2)
    data = builder.query_graph(bundle, "i2t", 5)
    assert set(data.node_types) == {"image", "text"}
    assert data.direction == "i2t" and data.query_index == 5
    assert data["image"].x.dtype == torch.float32 and data["image"].x.shape == (3, 8)
    assert data["text"].x.shape == (5, 8)
    assert data["image"].is_query.tolist() == [True, False, False]
    assert not bool(data["text"].is_query.any())
    assert int(data["image"].gallery_index[0]) == 5
    assert data["text"].y.dtype == torch.bool
    assert set(data.edge_types) == {(s, "overlaps", d) for s in ("image", "text") for d in ("image", "text")}
    for et in data.edge_types:
        assert data[et].edge_index.shape[1] == data[et].edge_weight.numel()
    # self loops are included
    ii = data["image", "overlaps", "image"].edge_index
    assert {(0, 0), (1, 1), (2, 2)} <= set(map(tuple, ii.T.tolist()))
    # the graph equals the batch-built one
    full = builder.build(bundle, "i2t")
    assert torch.equal(full[5]["text"].x, data["text"].x)


def test_dataloader_round_trip():
    bundle = random_bundle()
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3, context_nodes=1).build(bundle, "t2i")
    loader = DataLoader(ds, batch_size=7, shuffle=False)
    batch = next(iter(loader))
    got = from_hetero_batch(batch)
    ref = ds.batch(torch.arange(7))
    for name in ("x", "adj", "node_type", "candidate_mask", "query_index", "node_index", "base_score", "y"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name


def test_save_load(tmp_path):
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3).build(random_bundle(), "i2t")
    path = ds.save(tmp_path / "g.pt")
    back = QueryGraphDataset.load(path)
    assert back.config == ds.config and back.direction == "i2t"
    assert torch.equal(back.graphs.adj, ds.graphs.adj)
    assert torch.equal(back.pillars.inter, ds.pillars.inter)
    with pytest.raises(FileNotFoundError):
        QueryGraphDataset.load(tmp_path / "nope.pt")


def test_subset_indices_and_chunks():
    bundle = random_bundle()
    b1 = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    b2 = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3, chunk_size=5)
    full = b1.build(bundle, "t2i")
    chunked = b2.build(bundle, "t2i")
    assert torch.equal(full.graphs.x, chunked.graphs.x) and torch.equal(full.graphs.adj, chunked.graphs.adj)
    part = b1.build(bundle, "t2i", indices=[7, 2])
    assert torch.equal(part.graphs.x, full.graphs.x[[7, 2]])


def test_mirror_matches_definition():
    bundle = random_bundle(n=10, per=3)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    i2t = builder.build(bundle, "i2t")
    captions = torch.tensor([0, 5, 11, 29])
    images = bundle.txt2img[captions]
    t2i_pillars = builder.build(bundle, "t2i", indices=captions).pillars
    mirror = builder.mirror(bundle, i2t.batch(images), captions, t2i_pillars)
    assert mirror.direction == "t2i"
    assert torch.equal(mirror.adj, i2t.graphs.adj[images])
    assert mirror.node_type.tolist() == [1] + [0] * 5
    for r, (t, i) in enumerate(zip(captions.tolist(), images.tolist())):
        assert int(mirror.node_index[r, 0]) == t
        cands = i2t.graphs.node_index[i, 1:]
        assert mirror.node_index[r, 1:].tolist() == bundle.txt2img[cands].tolist()
        ref = builder.build(bundle, "t2i", indices=[t])
        inter, intra = ref.pillars.inter[0], ref.pillars.intra[0]
        for pos in range(1, 6):
            g = int(mirror.node_index[r, pos])
            expect = [float(bundle.sim_i2i[g, p]) for p in inter] + [float(bundle.sim_i2t[g, p]) for p in intra]
            np.testing.assert_allclose(mirror.x[r, pos].numpy(), expect, rtol=1e-6)
        assert mirror.y[r, 1:].tolist() == (bundle.txt2img[cands] == i).tolist()


def test_mirror_positive_sampling_is_seeded():
    bundle = random_bundle(n=10, per=3)
    builder = PillarGraphBuilder(num_pillars=4, k_i2t=6, k_t2i=4, overlap_neighbors=3)
    t2i = builder.build(bundle, "t2i")
    images = bundle.txt2img[:8]
    pillars = builder.build(bundle, "i2t", indices=images).pillars

    def run(seed):
        return builder.mirror(bundle, t2i.batch(torch.arange(8)), images, pillars,
                              generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.node_index, b.node_index)
    assert not torch.equal(a.node_index, c.node_index)
    # every sampled caption describes the candidate image it replaces
    cand_imgs = t2i.graphs.node_index[:8, 1:]
    assert torch.equal(bundle.txt2img[a.node_index[:, 1:]], cand_imgs)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(k_i2t=40), "k_i2t"),
    (dict(k_t2i=14), "k_t2i"),
    (dict(num_pillars=13), "num_pillars"),
    (dict(context_nodes=12), "context_nodes"),
])
def test_too_large_for_gallery(kwargs, msg):
    bundle = random_bundle()
    direction = "t2i" if "k_t2i" in kwargs else "i2t"
    with pytest.raises(ValueError, match=msg):
        PillarGraphBuilder(**{**dict(num_pillars=4, overlap_neighbors=3), **kwargs}).build(bundle, direction)


def test_bad_arguments():
    bundle = random_bundle()
    with pytest.raises(ValueError, match="direction"):
        PillarGraphBuilder(num_pillars=4).build(bundle, "x2y")
    with pytest.raises(ValueError, match="anchor"):
        PillarGraphBuilder(anchor="middle")
    with pytest.raises(ValueError, match="overlap_neighbors"):
        PillarGraphBuilder(overlap_neighbors=0)
    bare = SimilarityBundle(bundle.sim_i2t, bundle.txt2img)
    with pytest.raises(ValueError, match="sim_i2i.*with_second_order_intra"):
        PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(bare, "i2t")
    # the documented fallback works
    PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(bare.with_second_order_intra(), "i2t")


def test_query_is_its_own_first_intra_pillar():
    bundle = random_bundle()
    ds = PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3).build(bundle, "i2t")
    assert torch.equal(ds.pillars.intra[:, 0], torch.arange(bundle.num_images))
    assert not bool((ds.pillars.intra[:, 1:] == torch.arange(bundle.num_images)[:, None]).any())
    # the first intra column of a candidate is its base score
    assert torch.allclose(ds.graphs.x[:, 1:, 4].double(), ds.graphs.base_score[:, 1:].double(), atol=1e-6)
    excl = PillarGraphBuilder(num_pillars=4, k_i2t=6, overlap_neighbors=3, include_self=False).build(bundle, "i2t")
    assert not bool((excl.pillars.intra == torch.arange(bundle.num_images)[:, None]).any())


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_neighbor_lists_input_matches_dense(direction):
    from pillargraph.data import NeighborLists
    from pillargraph.data.synthetic import synthetic_embeddings
    split = synthetic_embeddings(40, 3, seed=2)
    dense = split.to_bundle(dtype=torch.float64)
    cfg = dict(num_pillars=6, k_i2t=8, k_t2i=5, overlap_neighbors=4, context_nodes=1)
    ref = PillarGraphBuilder(**cfg).build(dense, direction).graphs
    # exact similarities from the kept embeddings: identical graphs
    kw = dict(img_intra_emb=split.img_intra_emb.double(), txt_intra_emb=split.txt_intra_emb.double(),
              backend="torch")
    lists = NeighborLists.from_embeddings(split.img_emb.double(), split.txt_emb.double(), split.txt2img,
                                          k=20, **kw)
    got = PillarGraphBuilder(**cfg).build(lists, direction).graphs
    for name in ("node_index", "y"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    for name in ("x", "adj", "base_score"):
        assert torch.allclose(getattr(got, name), getattr(ref, name), atol=1e-5), name
    # lists only (no embeddings): same nodes, neighbours and adjacency; features agree wherever the
    # pair is stored, and are never below the true similarity elsewhere (the documented fill rule)
    sparse = NeighborLists.from_embeddings(split.img_emb.double(), split.txt_emb.double(), split.txt2img,
                                           k=20, keep_embeddings=False, **kw)
    approx = PillarGraphBuilder(**cfg).build(sparse, direction).graphs
    assert torch.equal(approx.node_index, ref.node_index)
    assert torch.allclose(approx.adj, ref.adj, atol=1e-6)
    assert bool((approx.x >= ref.x - 1e-5).all())
    assert float((approx.x - ref.x).abs().le(1e-5).float().mean()) > 0.5
