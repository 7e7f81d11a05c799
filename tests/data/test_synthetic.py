import dataclasses
import math
import tracemalloc

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.data import (SyntheticConfig, SyntheticSplit, SyntheticWorld, synthetic_embeddings,
                              synthetic_splits)


def plain_cosine(a, b):
    """Cosine similarity with explicit loops over rows (the reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = sum(a[i] * b[j]) / math.sqrt(sum(a[i] * a[i]) * sum(b[j] * b[j]))
    return out


def plain_neighbour_rescore(sim_i2t, sim_t2t, k=5, w=0.5):
    """Training-free re-scoring with caption neighbourhoods, one caption at a time.

    s'(i, t) = s(i, t) + w * mean_{t' in top-k t2t neighbours of t, t' != t} s(i, t').
    Used for both directions: for a caption query it expands the query with its
    nearest captions, for an image query it smooths each candidate caption with
    its nearest captions.
    """
    s = np.asarray(sim_i2t, dtype=np.float64)
    t2t = np.asarray(sim_t2t, dtype=np.float64)
    out = s.copy()
    for t in range(s.shape[1]):
        row = t2t[t].copy()
        row[t] = -np.inf
        nbrs = np.argsort(-row, kind="stable")[:k]
        out[:, t] += w * s[:, nbrs].mean(axis=1)
    return out


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("cpi", [1, 3, 5, 7])
def test_shapes_and_layout(cpi):
    train, dev, test = synthetic_splits(12, 7, 9, captions_per_image=cpi, seed=3)
    for b, n in ((train, 12), (dev, 7), (test, 9)):
        assert isinstance(b, SimilarityBundle)
        assert b.num_images == n and b.num_texts == n * cpi
        assert b.has_intra and b.img_emb is not None and b.txt_emb is not None
        assert torch.equal(b.txt2img, torch.arange(n * cpi) // cpi)
        assert b.sim_i2t.dtype == torch.float32


def test_bundle_matches_plain_cosine_of_embeddings():
    split = synthetic_embeddings(6, 3, seed=1, config=SyntheticConfig(complementarity=0.4))
    b = split.to_bundle(dtype=torch.float64)
    np.testing.assert_allclose(b.sim_i2t, plain_cosine(split.img_emb, split.txt_emb), atol=1e-6)
    # intra matrices are exactly the inner products of the intra embeddings, which have unit norm
    np.testing.assert_allclose(b.sim_i2i, plain_cosine(split.img_intra_emb, split.img_intra_emb),
                               atol=1e-6)
    np.testing.assert_allclose(b.sim_t2t, plain_cosine(split.txt_intra_emb, split.txt_intra_emb),
                               atol=1e-6)
    for e in (split.img_emb, split.txt_emb, split.img_intra_emb, split.txt_intra_emb):
        np.testing.assert_allclose(e.norm(dim=1), 1.0, atol=1e-5)


def test_complementarity_mixes_joint_and_unimodal_similarities():
    def bundle(c):
        return synthetic_embeddings(20, 4, seed=2, config=SyntheticConfig(complementarity=c)) \
            .to_bundle(dtype=torch.float64)
    b0, b1, bc = bundle(0.0), bundle(1.0), bundle(0.3)
    # the cross-modal side does not depend on the knob
    assert torch.equal(b0.sim_i2t, b1.sim_i2t) and torch.equal(b0.sim_i2t, bc.sim_i2t)
    # at 0 the intra matrices are cosines of the cross-modal embeddings: nothing new
    np.testing.assert_allclose(b0.sim_i2i, plain_cosine(b0.img_emb, b0.img_emb), atol=1e-6)
    np.testing.assert_allclose(b0.sim_t2t, plain_cosine(b0.txt_emb, b0.txt_emb), atol=1e-6)
    # in between: (1 - c) * joint cosine + c * unimodal cosine
    for name in ("sim_i2i", "sim_t2t"):
        want = 0.7 * getattr(b0, name) + 0.3 * getattr(b1, name)
        np.testing.assert_allclose(getattr(bc, name), want, atol=1e-5)
    # and the unimodal encoders really differ from the joint ones
    assert (b1.sim_t2t - b0.sim_t2t).abs().max() > 0.1


def test_ground_truth_structure():
    split = synthetic_embeddings(400, 5, seed=0)
    b = split.to_bundle()
    same_topic = split.img_topic[:, None] == split.img_topic[None, :]
    same_scene = split.img_scene[:, None] == split.img_scene[None, :]
    off = ~torch.eye(400, dtype=torch.bool)
    s = b.sim_i2i
    # scene mates are closer than topic mates, which are closer than strangers
    assert s[same_scene & off].mean() > s[same_topic & ~same_scene].mean() + 0.1
    assert s[same_topic & ~same_scene].mean() > s[~same_topic].mean() + 0.1
    assert bool((split.img_scene // SyntheticConfig().scenes_per_topic == split.img_topic).all())
    # captions of one image are each other's nearest captions far more often than not
    t2t = b.sim_t2t.clone().fill_diagonal_(-math.inf)
    nearest = t2t.argmax(dim=1)
    assert (b.txt2img[nearest] == b.txt2img).float().mean() > 0.8


def test_modality_gap_and_hubs():
    split = synthetic_embeddings(500, 5, seed=0)
    gap = (split.img_emb.mean(0) - split.txt_emb.mean(0)).norm()
    no_gap = synthetic_embeddings(500, 5, seed=0,
                                  config=SyntheticConfig(modality_gap=0.0, hub_fraction=0.0))
    assert gap > 0.4
    assert (no_gap.img_emb.mean(0) - no_gap.txt_emb.mean(0)).norm() < 0.2
    # hub captions appear in many more images' top 10 than other captions
    top = (split.img_emb @ split.txt_emb.T).topk(10, dim=1).indices.flatten()
    occurrence = torch.bincount(top, minlength=split.num_texts).float()
    assert split.txt_hub.any() and not split.txt_hub.all()
    assert occurrence[split.txt_hub].mean() > 5 * occurrence[~split.txt_hub].mean()
    assert not no_gap.txt_hub.any() and not no_gap.img_hub.any()


# -------------------------------------------------------------- determinism
def _assert_same(a: SimilarityBundle, b: SimilarityBundle) -> None:
    for name in ("sim_i2t", "txt2img", "sim_i2i", "sim_t2t", "img_emb", "txt_emb"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_same_seed_same_bundles_different_seed_differs():
    first = synthetic_splits(30, 10, 20, seed=5)
    again = synthetic_splits(30, 10, 20, seed=5)
    for a, b in zip(first, again):
        _assert_same(a, b)
    other = synthetic_splits(30, 10, 20, seed=6)
    for a, b in zip(first, other):
        assert not torch.equal(a.sim_i2t, b.sim_i2t)


def test_splits_are_independent_streams_of_one_world():
    _, _, test_a = synthetic_splits(30, 10, 20, seed=4)
    _, _, test_b = synthetic_splits(50, 3, 20, seed=4)
    _assert_same(test_a, test_b)  # a split does not move when another split's size does
    _assert_same(test_a, synthetic_embeddings(20, seed=4, split="test").to_bundle())
    _assert_same(test_a, SyntheticWorld(seed=4).sample(20, 5, split=2).to_bundle())


def test_splits_are_disjoint_images_of_the_same_world():
    world = SyntheticWorld(seed=0)
    train, test = world.sample(300, 2, "train"), world.sample(300, 2, "test")
    cross = train.img_emb @ test.img_emb.T
    assert cross.max() < 0.999  # no image is shared
    # same world: the test images have scene mates in train that they resemble
    shared = set(train.img_scene.tolist()) & set(test.img_scene.tolist())
    assert len(shared) > 20
    other_world = SyntheticWorld(seed=1).sample(300, 2, "train")
    # a seed-1 world has other encoders, so its images are not aligned with seed-0 captions
    def mean_pos(img, txt, t2i):
        return float((img.img_emb[t2i] * txt.txt_emb).sum(1).mean())
    assert mean_pos(test, test, test.txt2img) > mean_pos(other_world, test, test.txt2img) + 0.2


# ------------------------------------------------------------------ realism
def test_default_recall_on_1000_test_images_seed_0():
    _, _, test = synthetic_splits(1, 1, 1000, seed=0)
    m = evaluate(test)
    assert 60.0 <= m["i2t_r1"] <= 85.0
    assert 40.0 <= m["t2i_r1"] <= 65.0
    assert m["i2t_r1"] > m["t2i_r1"]
    assert m["i2t_r1"] <= m["i2t_r5"] <= m["i2t_r10"] < 100.0


@pytest.mark.parametrize("seed", [1, 2])
def test_default_recall_ranges_other_seeds(seed):
    m = evaluate(synthetic_embeddings(1000, 5, seed=seed).to_bundle(keep_embeddings=False))
    assert 60.0 <= m["i2t_r1"] <= 85.0
    assert 40.0 <= m["t2i_r1"] <= 65.0


def test_harder_world_lowers_recall():
    easy = evaluate(synthetic_embeddings(200, 5, seed=0).to_bundle())
    hard = evaluate(synthetic_embeddings(
        200, 5, seed=0, config=SyntheticConfig(encoder_noise=1.0)).to_bundle())
    assert hard["rsum"] < easy["rsum"] - 30


def test_intra_similarities_carry_learnable_signal_only_when_complementary():
    gains = {}
    for c in (1.0, 0.0):
        b = synthetic_embeddings(300, 5, seed=0, config=SyntheticConfig(complementarity=c)) \
            .to_bundle(keep_embeddings=False)
        base = evaluate(b)["rsum"]
        gains[c] = evaluate(plain_neighbour_rescore(b.sim_i2t, b.sim_t2t), b.txt2img)["rsum"] - base
    assert gains[1.0] >= 10.0
    assert gains[1.0] >= gains[0.0] + 8.0


def test_large_split_as_embeddings_stays_small():
    tracemalloc.start()
    try:
        split = synthetic_embeddings(20_000, 5, seed=0, split="train")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(split, SyntheticSplit)
    assert split.num_images == 20_000 and split.num_texts == 100_000
    assert peak < 512 * 2 ** 20  # a dense 20K x 100K float32 matrix alone would be 7.5 GiB


# --------------------------------------------------------------- validation
@pytest.mark.parametrize("field,value", [
    ("latent_dim", 0), ("num_topics", -1), ("scenes_per_topic", 1.5), ("joint_dim", True),
    ("joint_rank", 65), ("caption_noise", -0.1), ("encoder_noise", float("nan")),
    ("modality_gap", "big"), ("hub_fraction", 1.5), ("complementarity", -0.2),
    ("complementarity", 2.0),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})


def test_config_weights_cannot_all_be_zero():
    with pytest.raises(ValueError, match="weight"):
        SyntheticConfig(topic_weight=0, scene_weight=0, detail_weight=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_images=0), "num_images"),
    (dict(num_images=10, captions_per_image=0), "captions_per_image"),
    (dict(num_images=10, seed=-1), "seed"),
    (dict(num_images=10, split="validation"), "split"),
    (dict(num_images=10, split=-2), "split"),
    (dict(num_images=10, config={"complementarity": 0.5}), "config"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_embeddings(**kwargs)


def test_config_is_a_documented_frozen_dataclass():
    cfg = SyntheticConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.complementarity = 0.5
    doc = SyntheticConfig.__doc__
    for f in dataclasses.fields(SyntheticConfig):
        assert f"{f.name} (" in doc, f"{f.name} is not documented"
