import math

import pytest
import torch

from pillargraph.testing import triplet_loss_reference
from pillargraph.losses import PillarLoss, alignment_loss, contrastive_loss, hinge_loss, triplet_loss


def lists(b=6, k=7, seed=0, empty_rows=True):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(b, k, generator=g) * 2 - 1).requires_grad_()
    y = torch.rand(b, k, generator=g) < 0.3
    y[:, 1] = True  # most queries have a positive ...
    if empty_rows:
        y[0] = False  # ... one has none
        y[0, 0] = True  # only at the (excluded) query position
    mask = torch.ones(k, dtype=torch.bool)
    mask[0] = False
    return scores, y, mask


def contrastive_reference(scores, y, mask, tau):
    losses = []
    for q in range(scores.shape[0]):
        cand = [j for j in range(scores.shape[1]) if mask[j]]
        pos = [j for j in cand if y[q, j]]
        if not pos:
            continue
        num = sum(math.exp(scores[q, j].item() / tau) for j in pos)
        den = sum(math.exp(scores[q, j].item() / tau) for j in cand)
        losses.append(-math.log(num / den))
    return sum(losses) / len(losses)


def alignment_reference(a, b, mask, tau):
    total = 0.0
    for q in range(a.shape[0]):
        cand = [j for j in range(a.shape[1]) if mask[j]]
        za = sum(math.exp(a[q, j].item() / tau) for j in cand)
        zb = sum(math.exp(b[q, j].item() / tau) for j in cand)
        for j in cand:
            p = math.exp(a[q, j].item() / tau) / za
            r = math.exp(b[q, j].item() / tau) / zb
            total += p * math.log(p / r)
    return total / a.shape[0]


def hinge_reference(scores, base, mask, margin):
    total = 0.0
    for q in range(scores.shape[0]):
        cand = [j for j in range(scores.shape[1]) if mask[j]]
        floor = min(base[q, j].item() for j in cand)
        total += sum(max(0.0, floor + margin - scores[q, j].item()) for j in cand)
    return total / scores.shape[0]


@pytest.mark.parametrize("tau", [2.0, 0.1])
def test_contrastive(tau):
    scores, y, mask = lists()
    loss = contrastive_loss(scores, y, mask, tau=tau)
    assert loss.item() == pytest.approx(contrastive_reference(scores, y, mask, tau), rel=1e-5)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[0].abs().sum() == 0 and scores.grad[:, 0].abs().sum() == 0  # skipped query, non-candidate
    per_query = contrastive_loss(scores, y, mask, tau=tau, reduction="none")
    assert per_query.shape == (6,) and per_query[0] == 0


@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_triplet_matches_per_query_loop(margin):
    scores, y, mask = lists(b=9, k=8, seed=3)
    loss = triplet_loss(scores, y, mask, margin=margin)
    assert torch.allclose(loss, triplet_loss_reference(scores, y, mask, margin=margin), atol=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all()


def test_triplet_reference_by_hand():
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.6, 0.1]])
    y = torch.tensor([[True, True, False, False, False]])
    mask = torch.tensor([False, True, True, True, True])
    # hardest positive 0.5; negatives 0.9, 0.6, 0.1 -> 0.6 + 0.3 + 0 with margin 0.2
    expect = torch.tensor(0.9)
    assert torch.allclose(triplet_loss_reference(scores, y, mask), expect)
    assert torch.allclose(triplet_loss(scores, y, mask), expect)


def test_alignment_and_hinge():
    a, _, mask = lists(seed=1)
    b, _, _ = lists(seed=2)
    loss = alignment_loss(a, b, mask, tau=1.0)
    assert loss.item() == pytest.approx(alignment_reference(a, b, mask, 1.0), rel=1e-5)
    assert alignment_loss(a, a, mask).item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    base = torch.rand(6, 7)
    assert hinge_loss(a, base, mask, margin=0.1).item() == pytest.approx(hinge_reference(a, base, mask, 0.1),
                                                                         rel=1e-5)


def test_no_positive_anywhere_is_zero_with_finite_gradient():
    scores = torch.randn(3, 4, requires_grad=True)
    y = torch.zeros(3, 4, dtype=torch.bool)
    for fn in (contrastive_loss, triplet_loss):
        loss = fn(scores, y)
        assert loss.item() == 0
        loss.backward()
        assert torch.isfinite(scores.grad).all()


def test_half_precision_scores_are_computed_in_float():
    scores, y, mask = lists()
    half = scores.detach().bfloat16()
    assert contrastive_loss(half, y, mask).dtype == torch.float32


def test_input_errors():
    scores, y, mask = lists()
    with pytest.raises(ValueError, match="y"):
        triplet_loss(scores, y.float(), mask)
    with pytest.raises(ValueError, match="candidate_mask"):
        contrastive_loss(scores, y, mask[:-1])
    with pytest.raises(ValueError, match="reduction"):
        triplet_loss(scores, y, mask, reduction="max")
    with pytest.raises(ValueError, match="mirror_scores"):
        alignment_loss(scores, scores[:, :-1], mask)
    with pytest.raises(ValueError, match="scores"):
        contrastive_loss(scores[0], y[0])


def test_pillar_loss_combines_terms():
    s_i2t, y_i2t, m_i2t = lists(b=5, k=8, seed=0)
    s_t2i, y_t2i, m_t2i = lists(b=5, k=4, seed=1)
    mir_t2i, _, _ = lists(b=5, k=8, seed=2)  # t2i network on mirrored i2t lists
    mir_i2t, _, _ = lists(b=5, k=4, seed=3)
    base_i2t, base_t2i = torch.rand(5, 8), torch.rand(5, 4)
    loss_fn = PillarLoss(contrastive=1.0, triplet=0.5, alignment=2.0, mirror_contrastive=0.3, hinge=0.1,
                         tau=1.5, margin=0.3, align_tau=0.7)
    total, parts = loss_fn(s_i2t, s_t2i, mir_t2i, mir_i2t, y_i2t=y_i2t, y_t2i=y_t2i, mask_i2t=m_i2t,
                           mask_t2i=m_t2i, base_i2t=base_i2t, base_t2i=base_t2i)
    expect = 0.0
    for s, y, m, mir, base in ((s_i2t, y_i2t, m_i2t, mir_t2i, base_i2t), (s_t2i, y_t2i, m_t2i, mir_i2t, base_t2i)):
        expect += contrastive_reference(s, y, m, 1.5)
        expect += 0.5 * triplet_loss_reference(s, y, m, margin=0.3).item()
        expect += 2.0 * alignment_reference(s, mir, m, 0.7)
        expect += 0.3 * contrastive_reference(mir, y, m, 1.5)
        expect += 0.1 * hinge_reference(s, base, m, 0.0)
    assert total.item() == pytest.approx(expect, rel=1e-5)
    assert set(parts) == {f"{t}_{d}" for t in ("contrastive", "triplet", "alignment", "mirror_contrastive",
                                               "hinge") for d in ("i2t", "t2i")} | {"total"}
    total.backward()
    assert all(t.grad is not None for t in (s_i2t, s_t2i, mir_t2i, mir_i2t))
    # Without the alignment terms the mirrored lists are optional; missing ones are reported by name.
    plain = PillarLoss(alignment=0.0, mirror_contrastive=0.0)
    total, parts = plain(s_i2t, s_t2i, y_i2t=y_i2t, y_t2i=y_t2i, mask_i2t=m_i2t, mask_t2i=m_t2i)
    assert "alignment_i2t" not in parts
    with pytest.raises(ValueError, match="t2i_mirror"):
        PillarLoss()(s_i2t, s_t2i, y_i2t=y_i2t, y_t2i=y_t2i, mask_i2t=m_i2t, mask_t2i=m_t2i)
    with pytest.raises(ValueError, match="base_i2t"):
        PillarLoss(hinge=1.0, alignment=0, mirror_contrastive=0)(s_i2t, s_t2i, y_i2t=y_i2t, y_t2i=y_t2i)
    with pytest.raises(ValueError, match="triplet"):
        PillarLoss(triplet=-1.0)


def test_one_set_of_loss_defaults():
    """PillarLoss, TrainConfig and the Trainer's loss agree on every weight and temperature."""
    from pillargraph.losses import LOSS_DEFAULTS
    from pillargraph.train import TrainConfig
    assert PillarLoss().to_config() == LOSS_DEFAULTS
    config = TrainConfig()
    assert {k: getattr(config, k) for k in LOSS_DEFAULTS} == LOSS_DEFAULTS


def test_cli_sets_every_loss_setting():
    import argparse

    from pillargraph.cli.train import add_model_arguments, components
    from pillargraph.losses import LOSS_DEFAULTS
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    values = {k: 0.5 + i for i, k in enumerate(LOSS_DEFAULTS)}
    argv = [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    _, _, config = components(p.parse_args(argv))
    assert {k: getattr(config, k) for k in LOSS_DEFAULTS} == values
