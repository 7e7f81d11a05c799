"""Tiny synthetic problems and models shared by the training and re-ranking tests."""
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.nn import PillarReranker
from pillargraph.train import TrainConfig


def tiny_splits():
    return synthetic_splits(60, 30, 30, seed=3)


def tiny_builder():
    return PillarGraphBuilder(num_pillars=8, k_i2t=8, k_t2i=4, overlap_neighbors=4)


def tiny_model(builder, seed=0, **kw):
    import torch
    torch.manual_seed(seed)
    return PillarReranker(builder.num_features, hidden_channels=16, heads=2, **kw)


def tiny_config(**kw):
    base = dict(epochs=3, batch_size=64, warmup_steps=2, patience=None, seed=0)
    base.update(kw)
    return TrainConfig(**base)
