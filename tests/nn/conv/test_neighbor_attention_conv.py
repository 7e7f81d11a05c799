import math

import pytest
import torch

from pillargraph.nn import NeighborAttentionConv


def reference(conv, x, adj, allowed):
    """Per graph, per node, per head: the formula written out with loops."""
    b, k, c = x.shape
    h, d, mix = conv.heads, conv.head_dim, conv.mix
    q, key, v = conv.lin_qkv(x).split(c, dim=-1)
    out = torch.zeros(b, k, c)
    for g in range(b):
        for u in range(k):
            nbrs = [j for j in range(k) if allowed[g, u, j]]
            for head in range(h):
                sl = slice(head * d, (head + 1) * d)
                logits = torch.stack([q[g, u, sl] @ key[g, j, sl] / math.sqrt(d) for j in nbrs])
                p = torch.softmax(logits, dim=0)
                for i, j in enumerate(nbrs):
                    w = 0.0 if adj is None else adj[g, u, j]
                    out[g, u, sl] += ((1 - mix) * p[i] + mix * w if adj is not None else p[i]) * v[g, j, sl]
    return conv.lin_out(out)


def test_repr():
    assert repr(NeighborAttentionConv(256, heads=4)) == "NeighborAttentionConv(256, heads=4)"


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("mix", [0.0, 0.5, 0.8])
def test_sparse_full_equals_dense_equals_reference(make_batch, heads, mix):
    torch.manual_seed(0)
    batch = make_batch(b=3, k=5, f=8)
    conv = NeighborAttentionConv(8, heads=heads, mix=mix).eval()
    dense = conv.forward_dense(batch.x, batch.adj)
    edge_index, weight = batch.edge_index(full=True)
    sparse = conv(batch.flat_x(), edge_index, weight).view_as(dense)
    assert torch.allclose(sparse, dense, atol=1e-5)
    allowed = torch.ones(3, 5, 5, dtype=torch.bool)
    assert torch.allclose(dense, reference(conv, batch.x, batch.adj, allowed), atol=1e-5)


def test_sparse_overlap_edges_equals_masked_dense(make_batch):
    torch.manual_seed(1)
    batch = make_batch(b=4, k=6, f=8, density=0.3)
    conv = NeighborAttentionConv(8, heads=2).eval()
    edge_index, weight = batch.edge_index(full=False)
    sparse = conv(batch.flat_x(), edge_index, weight).view(4, 6, 8)
    mask = batch.adj > 0
    dense = conv.forward_dense(batch.x, batch.adj, mask)
    assert torch.allclose(sparse, dense, atol=1e-5)
    assert torch.allclose(dense, reference(conv, batch.x, batch.adj, mask), atol=1e-5)
    # Masking matters: attending over all pairs gives a different answer.
    assert not torch.allclose(dense, conv.forward_dense(batch.x, batch.adj), atol=1e-4)
    # A shared [K, K] mask broadcasts over the batch.
    shared = torch.ones(6, 6, dtype=torch.bool).tril()
    assert torch.allclose(conv.forward_dense(batch.x, batch.adj, shared),
                          conv.forward_dense(batch.x, batch.adj, shared.expand(4, 6, 6)), atol=1e-6)


def test_without_weights_is_plain_attention(make_batch):
    batch = make_batch(b=2, k=5, f=8)
    conv = NeighborAttentionConv(8, heads=2, mix=0.5).eval()
    edge_index, _ = batch.edge_index(full=True)
    sparse = conv(batch.flat_x(), edge_index).view(2, 5, 8)
    dense = conv.forward_dense(batch.x)
    allowed = torch.ones(2, 5, 5, dtype=torch.bool)
    assert torch.allclose(sparse, dense, atol=1e-5)
    assert torch.allclose(dense, reference(conv, batch.x, None, allowed), atol=1e-5)


def test_bipartite_input():
    torch.manual_seed(2)
    conv = NeighborAttentionConv(4, heads=2).eval()
    x_src, x_dst = torch.randn(3, 4), torch.randn(2, 4)
    edge_index = torch.tensor([[0, 1, 2, 2], [0, 0, 0, 1]])
    weight = torch.tensor([0.2, 0.3, 0.5, 1.0])
    out = conv((x_src, x_dst), edge_index, weight)
    assert out.shape == (2, 4)
    # Same as the homogeneous layer on the union graph, read at the targets.
    x = torch.cat([x_src, x_dst])
    union = conv(x, torch.stack([edge_index[0], edge_index[1] + 3]), weight)
    assert torch.allclose(out, union[3:], atol=1e-6)


def test_gradients_and_reset(make_batch):
    batch = make_batch(b=2, k=4, f=8)
    conv = NeighborAttentionConv(8, heads=2, dropout=0.1)
    conv.forward_dense(batch.x, batch.adj).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
    before = conv.lin_qkv.weight.detach().clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin_qkv.weight)


def test_bad_arguments(make_batch):
    with pytest.raises(ValueError, match="heads"):
        NeighborAttentionConv(10, heads=4)
    with pytest.raises(ValueError, match="mix"):
        NeighborAttentionConv(8, mix=1.5)
    conv = NeighborAttentionConv(8, heads=2)
    batch = make_batch(b=2, k=4, f=8)
    with pytest.raises(ValueError, match="adj"):
        conv.forward_dense(batch.x, batch.adj[:, :3])
    with pytest.raises(ValueError, match="mask"):
        conv.forward_dense(batch.x, batch.adj, batch.adj)
    edge_index, weight = batch.edge_index()
    with pytest.raises(ValueError, match="edge_weight"):
        conv(batch.flat_x(), edge_index, weight[:-1])
