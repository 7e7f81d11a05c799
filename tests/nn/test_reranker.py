import pytest
import torch
import torch.nn.functional as F

from pillargraph.nn import CONVS, PillarReranker, SplitLayerNorm


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("layer", sorted(CONVS))
@pytest.mark.parametrize("hetero", [False, True])
def test_every_layer_trains(make_batch, layer, hetero):
    if hetero and layer == "gcn":
        with pytest.raises(ValueError, match="GCNConv"):
            PillarReranker(8, layer=layer, hetero=True)
        return
    torch.manual_seed(0)
    model = PillarReranker(8, layer=layer, hidden_channels=12, heads=3, hetero=hetero)
    for direction in ("i2t", "t2i"):
        batch = make_batch(direction, b=3, k=6, f=8)
        scores = model(batch)
        assert scores.shape == (3, 6) and torch.isfinite(scores).all()
        assert torch.allclose(scores[:, 0], torch.ones(3), atol=1e-5)  # the query scores itself 1
        scores[:, 1:].sum().backward()
        net = model.network(direction)
        assert net.lin_in.weight.grad.abs().sum() > 0
        assert net.blocks[0].norm1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("attend", ["graph", "edges"])
@pytest.mark.parametrize("use_edge_weight", [True, False])
def test_dense_path_equals_sparse_path(make_batch, attend, use_edge_weight):
    torch.manual_seed(0)
    kw = dict(hidden_channels=16, heads=4, attend=attend, use_edge_weight=use_edge_weight)
    dense = PillarReranker(8, dense=True, **kw).eval()
    sparse = PillarReranker(8, dense=False, **kw).eval()
    sparse.load_state_dict(dense.state_dict())
    assert dense.network("i2t").dense and not sparse.network("i2t").dense
    batch = make_batch(b=4, k=7, f=8, density=0.3)
    assert torch.allclose(dense(batch), sparse(batch), atol=1e-5)


def test_readout_is_cosine_against_query(make_batch):
    model = PillarReranker(8, hidden_channels=16).eval()
    batch = make_batch(b=2, k=5, f=8)
    net = model.network("i2t")
    h = net.norm_out(net.embed(batch))
    expect = torch.stack([torch.stack([F.cosine_similarity(h[g, u], h[g, 0], dim=0) for u in range(5)])
                          for g in range(2)])
    assert torch.allclose(model(batch), expect, atol=1e-5)


def test_attend_and_edge_weight_options_change_what_the_model_sees(make_batch):
    torch.manual_seed(0)
    batch = make_batch(b=3, k=6, f=8, density=0.3)
    reweighted = make_batch(b=3, k=6, f=8, density=0.3)
    pattern = batch.adj > 0
    noise = torch.rand_like(batch.adj) * pattern + pattern.float() * 0.1
    reweighted.x = batch.x
    reweighted.adj = noise / noise.sum(-1, keepdim=True)  # same edges, different weights
    for layer in ("neighbor_attention", "gcn", "transformer"):
        model = PillarReranker(8, layer=layer, hidden_channels=8, heads=2).eval()
        assert not torch.allclose(model(batch), model(reweighted), atol=1e-5)
        blind = PillarReranker(8, layer=layer, hidden_channels=8, heads=2, use_edge_weight=False,
                               attend="edges").eval()
        assert torch.allclose(blind(batch), blind(reweighted), atol=1e-5)
    graph = PillarReranker(8, hidden_channels=8, heads=2, attend="graph").eval()
    edges = PillarReranker(8, hidden_channels=8, heads=2, attend="edges").eval()
    edges.load_state_dict(graph.state_dict())
    assert not torch.allclose(graph(batch), edges(batch), atol=1e-5)
    assert PillarReranker(8, layer="gcn").network("i2t").attend == "edges"
    assert PillarReranker(8, layer="gatv2", hidden_channels=8, heads=2).network("i2t").attend == "graph"


def test_directions_and_sharing(make_batch):
    torch.manual_seed(0)
    batch = make_batch("i2t", b=2, k=5, f=8)
    separate = PillarReranker(8, hidden_channels=16).eval()
    shared = PillarReranker(8, hidden_channels=16, share_directions=True).eval()
    assert n_params(separate) == 2 * n_params(shared)
    assert torch.equal(shared(batch), shared(batch, direction="t2i"))
    assert not torch.allclose(separate(batch), separate(batch, direction="t2i"))
    assert torch.equal(separate(batch, direction="t2i"), separate.network("t2i")(batch))
    with pytest.raises(ValueError, match="direction"):
        separate(batch, direction="x2y")


def expected_params(f, c, layers, ratio=4):
    attention = 4 * c * c + 4 * c
    mlp = 2 * ratio * c * c + ratio * c + c
    block = attention + mlp + 4 * c  # two LayerNorms
    net = 2 * f + (f * c + c) + layers * block + 2 * c
    return 2 * net


def test_parameter_count():
    assert n_params(PillarReranker(8, hidden_channels=16, num_layers=2, heads=4)) == expected_params(8, 16, 2)
    paper = PillarReranker(128, hidden_channels=768, num_layers=2, heads=24)
    assert n_params(paper) == expected_params(128, 768, 2)
    assert 28e6 < n_params(paper) < 29e6  # the paper reports about 28.7M
    assert isinstance(paper.network("i2t").norm_in, SplitLayerNorm)
    assert not isinstance(PillarReranker(7, hidden_channels=8, heads=2).network("i2t").norm_in, SplitLayerNorm)


def test_config_round_trip(make_batch):
    torch.manual_seed(0)
    model = PillarReranker(8, layer="gatv2", hidden_channels=12, heads=3, num_layers=1, dropout=0.0,
                           hetero=True, layer_kwargs={"share_weights": True}).eval()
    config = model.to_config()
    assert config == model.config and config["layer"] == "gatv2" and config["in_channels"] == 8
    rebuilt = PillarReranker.from_config(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    batch = make_batch("t2i", b=2, k=5, f=8)
    assert torch.equal(model(batch), rebuilt(batch))
    with pytest.raises(ValueError, match="unknown keys"):
        PillarReranker.from_config({**config, "colour": "red"})
    with pytest.raises(ValueError, match="in_channels"):
        PillarReranker.from_config({"layer": "gcn"})


def test_module_instance_layer(make_batch):
    from torch_geometric.nn.conv import SAGEConv
    model = PillarReranker(8, layer=SAGEConv(12, 12), hidden_channels=12, num_layers=2)
    convs = [block.conv for block in model.network("i2t").blocks]
    assert convs[0] is not convs[1] and not torch.equal(convs[0].lin_l.weight, convs[1].lin_l.weight)
    assert model(make_batch(b=2, k=4, f=8)).shape == (2, 4)
    with pytest.raises(ValueError, match="by name"):
        model.to_config()


def test_bad_arguments(make_batch):
    with pytest.raises(ValueError, match="attend"):
        PillarReranker(8, attend="everything")
    with pytest.raises(ValueError, match="layer"):
        PillarReranker(8, layer="nope")
    with pytest.raises(ValueError, match="hidden_channels"):
        PillarReranker(8, hidden_channels=0)
    with pytest.raises(ValueError, match="features"):
        PillarReranker(6, hidden_channels=8, heads=2)(make_batch(f=8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dense_equals_sparse_and_trains_under_autocast(make_batch):
    torch.manual_seed(0)
    dense = PillarReranker(8, hidden_channels=16, heads=4).cuda().eval()
    sparse = PillarReranker(8, hidden_channels=16, heads=4, dense=False).cuda().eval()
    sparse.load_state_dict(dense.state_dict())
    batch = make_batch(b=4, k=7, f=8).to("cuda")
    assert torch.allclose(dense(batch), sparse(batch), atol=1e-4)
    dense.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        scores = dense(batch)
    scores[:, 1:].float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dense.parameters() if p.grad is not None)


def test_feature_skip_starts_at_zero_and_learns_a_linear_function_of_the_features(make_batch):
    batch = make_batch("i2t", b=4, k=6, f=10)
    torch.manual_seed(0)
    plain = PillarReranker(10, extra_channels=3, hidden_channels=12, dropout=0.0).eval()
    torch.manual_seed(0)
    skip = PillarReranker(10, extra_channels=3, hidden_channels=12, dropout=0.0, feature_skip=3.0).eval()
    skip.load_state_dict(plain.state_dict(), strict=False)
    torch.testing.assert_close(skip(batch), plain(batch))  # zero-initialised: the graph network's scores
    net = skip.network("i2t")
    with torch.no_grad():
        net.lin_skip.weight.copy_(torch.tensor([[2.0, 0.0, -1.0]]))
    extra = batch.x[..., -3:]
    torch.testing.assert_close(skip(batch) - plain(batch), 3 * (2 * extra[..., 0] - extra[..., 2]))
    skip(batch)[:, 1:].sum().backward()
    assert net.lin_skip.weight.grad.abs().sum() > 0
    net.reset_parameters()
    assert net.lin_skip.weight.abs().sum() == 0
    assert PillarReranker.from_config(skip.to_config()).network("t2i").lin_skip is not None
    with pytest.raises(ValueError, match="feature_skip"):
        PillarReranker(10, feature_skip=1.0)
    with pytest.raises(ValueError, match="feature_skip"):
        PillarReranker(10, extra_channels=3, feature_skip=-1.0)
