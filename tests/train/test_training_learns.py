"""Training must learn: a trained model's scores alone beat the base; an untrained model's do not.

Every fusion assertion elsewhere holds by construction (weight 0, the base, is
in the grid). This test is the one that fails if a loss or the readout has its
sign flipped: it reads the learned scores alone (fusion weight 1) on a test
split that neither training nor selection saw.
"""
import pytest
import torch

from pillargraph.data import synthetic_splits
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.metrics import evaluate
from pillargraph.nn import PillarReranker
from pillargraph.rerank import rerank
from pillargraph.train import TrainConfig, fit_reranker

MARGIN = 8.0  # rSum points; trained models gain about 15 here, untrained ones lose 5 to 11


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits(400, 300, 300, seed=0)


def test_trained_scores_alone_beat_the_base(splits):
    train, dev, test = splits
    fitted = fit_reranker(train, dev, {"num_pillars": 16}, {"hidden_channels": 32},
                          TrainConfig(epochs=2, seed=0, batch_size=64))
    base = evaluate(test)["rsum"]
    learned = evaluate(rerank(fitted.model, test, fitted.builder, fusion=1.0))["rsum"]
    assert learned > base + MARGIN, (learned, base)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_scores_alone_do_not(splits, seed):
    _, _, test = splits
    torch.manual_seed(seed)
    builder = PillarGraphBuilder(num_pillars=16)
    model = PillarReranker(builder.num_features, hidden_channels=32)
    learned = evaluate(rerank(model, test, builder, fusion=1.0))["rsum"]
    assert learned < evaluate(test)["rsum"] + MARGIN / 4
