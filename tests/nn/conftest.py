import pytest
import torch

from pillargraph.graphs import IMAGE, TEXT, GraphBatch


def random_batch(direction: str = "i2t", b: int = 3, k: int = 6, f: int = 8, density: float = 0.4,
                 seed: int = 0) -> GraphBatch:
    """Random query graphs: random features, random row-stochastic overlap adjacency with self loops."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k, f, generator=g)
    raw = torch.rand(b, k, k, generator=g) * (torch.rand(b, k, k, generator=g) < density)
    raw = raw + torch.eye(k)  # self loops survive
    adj = raw / raw.sum(-1, keepdim=True)
    query_type, cand_type = (IMAGE, TEXT) if direction == "i2t" else (TEXT, IMAGE)
    node_type = torch.full((k,), cand_type, dtype=torch.long)
    node_type[0] = query_type
    candidate_mask = torch.ones(k, dtype=torch.bool)
    candidate_mask[0] = False
    y = torch.rand(b, k, generator=g) < 0.3
    y[:, 0] = False
    return GraphBatch(direction=direction, x=x, adj=adj, node_type=node_type, candidate_mask=candidate_mask,
                      query_index=torch.arange(b), node_index=torch.randint(0, 100, (b, k), generator=g),
                      base_score=torch.rand(b, k, generator=g).sort(-1, descending=True).values, y=y)


@pytest.fixture
def make_batch():
    return random_batch
