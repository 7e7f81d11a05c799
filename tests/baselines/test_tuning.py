"""Dev-split tuning of training-free re-rankers: reads dev only, fuses with the base per query."""
import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.baselines import (FUSION_GRID, TUNING_GRIDS, Reranker, available_rerankers,
                                   evaluate_rescored, fuse_with_base, get_reranker, tune_reranker)


class Flip(Reranker):
    """Unregistered toy method: ``flip=0`` keeps the base scores, ``flip=1`` reverses them."""

    def __init__(self, flip: int = 0) -> None:
        self.flip = flip

    def rerank(self, view):
        return -view.sim if self.flip else view.sim.clone()


def reversed_bundle(b: SimilarityBundle) -> SimilarityBundle:
    return b.replace(sim_i2t=-b.sim_i2t)


def test_selection_reads_dev_only(make_bundle):
    dev = make_bundle(n=12, per=3, seed=1)
    test = reversed_bundle(make_bundle(n=12, per=3, seed=2))  # its best parameter is the other one
    on_dev = tune_reranker(Flip, dev, grid={"flip": (0, 1)}, fusion_grid=(0.0, 1.0))
    on_test = tune_reranker(Flip, test, grid={"flip": (0, 1)}, fusion_grid=(0.0, 1.0))
    assert on_dev.params == {"flip": 0} and on_test.params == {"flip": 1}
    # the test split's outcome does not leak into a choice made on dev
    again = tune_reranker(Flip, dev, grid={"flip": (0, 1)}, fusion_grid=(0.0, 1.0))
    assert again.params == on_dev.params and again.fusion == on_dev.fusion
    rows = {tuple(t["params"].items()): t["rsum"] for t in on_dev.table}
    assert rows[(("flip", 0),)] > rows[(("flip", 1),)]


def test_defaults_always_tried_and_recorded(make_bundle):
    dev = make_bundle(n=25, seed=3)
    tuned = tune_reranker("krnn", dev, grid={"k1_i2t": (2, 3)}, fusion_grid=(0.0,))
    assert tuned.table[0]["params"] == {"k1_i2t": 15}  # the default, first
    assert tuned.dev_default_rsum == tuned.table[0]["rsum"]
    assert tuned.dev_rsum == max(t["rsum"] for t in tuned.table)
    assert tuned.params["k1_t2i"] == 20  # not searched: the default
    assert tuned.fusion == {"i2t": 0.0, "t2i": 0.0}
    assert tuned.dev_fused_rsum == pytest.approx(evaluate(dev)["rsum"])


def test_fusion_never_below_base_or_method_on_dev(make_bundle):
    dev = make_bundle(n=15, per=3, seed=4)
    tuned = tune_reranker("alpha_qe", dev)
    assert tuned.dev_fused_rsum >= max(tuned.dev_rsum, evaluate(dev)["rsum"]) - 1e-9


def test_fuse_with_base_endpoints(make_bundle):
    b = make_bundle(n=25, seed=5)
    scores = get_reranker("krnn")(b)
    base = fuse_with_base(b, scores, {"i2t": 0.0, "t2i": 0.0})
    alone = fuse_with_base(b, scores, {"i2t": 1.0, "t2i": 1.0})
    assert evaluate_rescored(base, b) == pytest.approx(evaluate(b))
    assert evaluate_rescored(alone, b) == pytest.approx(evaluate_rescored(scores, b))
    # scale invariant per query
    big = fuse_with_base(b.replace(sim_i2t=b.sim_i2t * 1e6), {k: v * 1e6 for k, v in scores.items()},
                         {"i2t": 0.5, "t2i": 0.5})
    mid = fuse_with_base(b, scores, {"i2t": 0.5, "t2i": 0.5})
    assert evaluate_rescored(big, b) == pytest.approx(evaluate_rescored(mid, b))
    with pytest.raises(ValueError, match="fusion weight"):
        fuse_with_base(b, scores, {"i2t": 1.5, "t2i": 0.0})


def test_grids_name_real_parameters_and_contain_defaults(make_bundle):
    assert set(TUNING_GRIDS) == set(available_rerankers())
    for name, grid in TUNING_GRIDS.items():
        defaults = get_reranker(name).params()
        assert 1 <= len(grid) <= 3, name
        for p, values in grid.items():
            assert p in defaults, (name, p)
            assert any(v == pytest.approx(defaults[p]) for v in values), (name, p)
    assert 0.0 in FUSION_GRID and 1.0 in FUSION_GRID


def test_unknown_grid_parameter_is_named(make_bundle):
    with pytest.raises(ValueError, match="no parameter"):
        tune_reranker("krnn", make_bundle(), grid={"banana": (1,)})
