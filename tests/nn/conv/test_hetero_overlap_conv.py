import copy

import pytest
import torch
from torch_geometric.nn.conv import GCNConv, GraphConv

from pillargraph.nn import HeteroOverlapConv, NeighborAttentionConv


def test_split_and_merge_matches_homogeneous_conv():
    # With identical weights in every relation, summing GraphConv over the two relations entering a node
    # type equals one homogeneous GraphConv plus one extra root term and bias: a check of the index bookkeeping.
    torch.manual_seed(0)
    base = GraphConv(6, 6)
    conv = HeteroOverlapConv(lambda: copy.deepcopy(base))
    n = 9
    x = torch.randn(n, 6)
    node_type = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    edge_index = torch.randint(0, n, (2, 30))
    weight = torch.rand(30)
    out = conv(x, edge_index, weight, node_type=node_type)
    expect = base(x, edge_index, weight) + base.lin_root(x) + base.lin_rel.bias
    assert torch.allclose(out, expect, atol=1e-5)


def test_relations_have_own_weights_and_gradients():
    torch.manual_seed(1)
    conv = HeteroOverlapConv(lambda: NeighborAttentionConv(4, heads=2))
    assert len(conv.convs.convs) == 4
    x = torch.randn(6, 4, requires_grad=True)
    node_type = torch.tensor([0, 1, 1, 1, 0, 1])
    src, dst = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    edge_index = torch.stack([src.reshape(-1), dst.reshape(-1)])
    out = conv(x, edge_index, torch.full((36,), 1 / 6), node_type=node_type)
    assert out.shape == (6, 4)
    out.sum().backward()
    for rel_conv in conv.convs.convs.values():
        assert rel_conv.lin_qkv.weight.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match="GCNConv"):
        HeteroOverlapConv(lambda: GCNConv(4, 4))
    conv = HeteroOverlapConv(lambda: GraphConv(4, 4))
    with pytest.raises(ValueError, match="node_type"):
        conv(torch.randn(3, 4), torch.tensor([[0], [1]]))
