import pytest
import torch
from torch_geometric.nn.conv import GATv2Conv, GCNConv, GINConv, GINEConv, SAGEConv, TransformerConv

from pillargraph.nn import CONVS, NeighborAttentionConv, conv_resolver, conv_spec, edge_input, edge_kwargs


@pytest.mark.parametrize("query", ["neighbor_attention", "NeighborAttentionConv", "neighbor-attention",
                                   "Neighbour Attention"])
def test_names_normalise(query):
    conv = conv_resolver(query, 16, heads=4)
    assert isinstance(conv, NeighborAttentionConv) and conv.heads == 4


@pytest.mark.parametrize("query,cls", [("transformer", TransformerConv), ("TransformerConv", TransformerConv),
                                       ("GATv2", GATv2Conv), ("gcn", GCNConv), ("sage", SAGEConv),
                                       ("gin", GINConv), ("gine", GINEConv)])
def test_pyg_classes(query, cls):
    assert type(conv_resolver(query, 16, heads=4)) is cls


@pytest.mark.parametrize("name", sorted(CONVS))
def test_every_layer_maps_channels_to_channels(name):
    torch.manual_seed(0)
    conv = conv_resolver(name, 12, heads=3)
    x = torch.randn(5, 12)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1, 2], [0, 1, 2, 3, 4, 0, 0]])
    weight = torch.rand(7)
    out = conv(x, edge_index, **edge_kwargs(edge_input(conv), weight))
    assert out.shape == (5, 12)
    # The spec's claim about edge weights is true: node 0 (three in-edges) changes iff the layer uses them.
    other = conv(x, edge_index, **edge_kwargs(edge_input(conv), weight * 0.3 + 0.5))
    assert (not torch.allclose(out[0], other[0], atol=1e-6)) == CONVS[name].uses_edge_weight


def test_instance_passes_through_and_kwargs_override():
    conv = SAGEConv(8, 8)
    assert conv_resolver(conv, 8) is conv
    assert conv_resolver("neighbor_attention", 8, heads=2, mix=0.25).mix == 0.25
    assert conv_resolver("transformer", 8, heads=2, concat=False).out_channels == 4


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="gatv2"):
        conv_resolver("graphormer", 8)
    with pytest.raises(ValueError, match="heads"):
        conv_resolver("transformer", 10, heads=4)
    assert conv_spec("GraphConv").name == "graph"


def test_edge_input():
    assert edge_input(NeighborAttentionConv(4)) == "edge_weight"
    assert edge_input(TransformerConv(4, 4)) == "edge_attr"
    assert edge_input(SAGEConv(4, 4)) is None
    w = torch.rand(3)
    assert edge_kwargs("edge_attr", w)["edge_attr"].shape == (3, 1)
    assert edge_kwargs(None, w) == {}
