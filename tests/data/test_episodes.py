"""Episodes of mixed sizes: the partition, and episodic splits that answer like their episodes alone."""
import pytest
import torch

from pillargraph import SimilarityBundle
from pillargraph.data import EpisodicSimilarity
from pillargraph.data.partition import episode_partition, episode_texts
from pillargraph.graphs import PillarGraphBuilder

from ..helpers.bundles import random_bundle


def test_partition_covers_every_image_once_with_cycled_sizes():
    parts = episode_partition(23, (3, 5), seed=1)
    assert [p.numel() for p in parts] == [3, 5, 3, 5, 3, 4]  # 4 left over: >= 3, their own episode
    flat = torch.cat(parts)
    assert torch.equal(torch.sort(flat).values, torch.arange(23))
    assert all(torch.equal(p, torch.sort(p).values) for p in parts)


def test_partition_merges_a_short_remainder_and_is_seeded():
    parts = episode_partition(11, 5, seed=0)
    assert [p.numel() for p in parts] == [5, 6]  # 1 left over: joins the last episode
    again = episode_partition(11, 5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    other = episode_partition(11, 5, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other))


@pytest.mark.parametrize("sizes", [0, 1, (3, 1), (), (2.5,), True])
def test_partition_refuses_bad_sizes(sizes):
    with pytest.raises(ValueError, match="episode_images"):
        episode_partition(10, sizes)


def test_a_split_smaller_than_an_episode_is_one_episode():
    assert [p.numel() for p in episode_partition(2, (3, 5))] == [2]


def test_episode_texts_follow_their_images():
    t2i = torch.tensor([2, 0, 1, 2, 0, 1])
    assert torch.equal(episode_texts(t2i, torch.tensor([0, 2])), torch.tensor([0, 1, 3, 4]))


def _graphs(builder, data, direction, queries=None):
    return builder.build(data, direction, queries).graphs


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_from_bundle_equals_each_episode_built_alone(direction):
    b = random_bundle(n=13, per=3, d=5, seed=4)
    eps = EpisodicSimilarity.from_bundle(b, (4, 6), seed=2)
    assert eps.episode_sizes == [4, 9]  # 3 left over (< 4): they join the last episode
    assert torch.equal(eps.txt2img, b.txt2img)  # ids stay the bundle's
    builder = PillarGraphBuilder(num_pillars=2, k_i2t=3, k_t2i=3, overlap_neighbors=2,
                                 node_features=("rank", "reciprocal", "prior:dual_softmax(temperature=0.1)"),
                                 reciprocal_depth=3)  # below every episode's size, so the same depth in each
    for e in range(eps.num_episodes):
        images, texts = eps.episode_ids(e)
        queries = images if direction == "i2t" else texts
        whole = _graphs(builder, eps, direction, queries)
        alone = _graphs(PillarGraphBuilder(**builder.config), b.subset(images), direction)
        ids = texts if direction == "i2t" else images
        torch.testing.assert_close(whole.x, alone.x)
        torch.testing.assert_close(whole.adj, alone.adj)
        assert torch.equal(whole.y, alone.y)
        assert torch.equal(whole.node_index[:, 1:], ids[alone.node_index[:, 1:]])


def test_mixed_sizes_answer_like_the_dense_episodes():
    bundles = [random_bundle(n=n, per=2, d=4, seed=n) for n in (5, 3, 5)]
    eps = EpisodicSimilarity(bundles)
    assert (eps.num_images, eps.num_texts, eps.num_episodes) == (13, 26, 3)
    offsets = [(0, 0), (5, 10), (8, 16)]
    for kind in ("i2t", "t2i", "i2i", "t2t"):
        idx, val = eps.topk(kind, 2)
        for (io, to), bundle in zip(offsets, bundles):
            dense = {"i2t": bundle.sim_i2t, "t2i": bundle.sim_i2t.T, "i2i": bundle.sim_i2i, "t2t": bundle.sim_t2t}[kind]
            ro, co = (io if kind[0] == "i" else to), (io if kind[2] == "i" else to)
            v, i = torch.topk(dense, 2, dim=1)
            rows = slice(ro, ro + dense.shape[0])
            torch.testing.assert_close(val[rows], v)
            assert torch.equal(idx[rows], i + co)
            got = eps.gather(kind, torch.arange(dense.shape[0])[:, None] + ro, i + co)
            torch.testing.assert_close(got, v)
    with pytest.raises(ValueError, match="across episodes"):
        eps.gather("i2t", torch.tensor([0]), torch.tensor([12]))
    with pytest.raises(ValueError, match="smallest episode"):
        eps.topk("i2i", 4)
    assert "episode_images=3,5" in repr(eps)


def test_episodes_hold_one_copy_of_their_matrices():
    bundles = [random_bundle(n=n, per=2, d=4, seed=n) for n in (5, 3, 5)]
    eps = EpisodicSimilarity(bundles)
    for e, b in enumerate(bundles):  # the same values as given...
        for field in ("sim_i2t", "sim_i2i", "sim_t2t"):
            assert torch.equal(getattr(eps.episode(e), field), getattr(b, field))
            assert getattr(eps.episode(e), field).data_ptr() != getattr(b, field).data_ptr()
    # ...held as views of one stacked tensor per shape, not a second copy beside it
    first, third = eps.episode(0).sim_t2t, eps.episode(2).sim_t2t
    assert first.untyped_storage().data_ptr() == third.untyped_storage().data_ptr()
    assert first.untyped_storage().nbytes() == 2 * first.numel() * first.element_size()


def test_ids_must_cover_the_split_once():
    b = random_bundle(n=4, per=2, d=3)
    with pytest.raises(ValueError, match="image_ids"):
        EpisodicSimilarity([b.subset(torch.tensor([0, 1])), b.subset(torch.tensor([2, 3]))],
                           image_ids=[torch.tensor([0, 1]), torch.tensor([1, 3])],
                           text_ids=[torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])])


def test_intra_matrices_in_all_or_none():
    with_intra = random_bundle(n=3, per=2, d=3)
    without = SimilarityBundle(sim_i2t=with_intra.sim_i2t, txt2img=with_intra.txt2img)
    with pytest.raises(ValueError, match="sim_i2i"):
        EpisodicSimilarity([with_intra, without])


def _emb(n=11, per=3, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=torch.float64)
    t2i = torch.arange(n).repeat_interleave(per)
    txt = img[t2i] + 0.7 * torch.randn(n * per, d, generator=g, dtype=torch.float64)
    return img, txt, t2i, torch.randn(n, d, generator=g, dtype=torch.float64), \
        torch.randn(n * per, d, generator=g, dtype=torch.float64)


def test_episodic_lists_are_each_episodes_own_lists(tmp_path):
    from pillargraph.data import NeighborLists
    img, txt, t2i, img_intra, txt_intra = _emb()
    parts = episode_partition(11, (4, 5), seed=3)
    lists = NeighborLists.from_embeddings(img, txt, t2i, 6, img_intra, txt_intra, episodes=parts, backend="torch")
    assert lists.episode_sizes == [p.numel() for p in parts]
    unit = torch.nn.functional.normalize
    full = SimilarityBundle(sim_i2t=unit(img, dim=1) @ unit(txt, dim=1).T, txt2img=t2i,
                            sim_i2i=unit(img_intra, dim=1) @ unit(img_intra, dim=1).T,
                            sim_t2t=unit(txt_intra, dim=1) @ unit(txt_intra, dim=1).T)
    eps = EpisodicSimilarity.from_bundle(full, (4, 5), seed=3)
    for kind in ("i2t", "t2i", "i2i", "t2t"):
        depth = lists.depth(kind)
        assert depth == min(6, 4 if kind[2] == "i" else 12)  # capped at the smallest episode's gallery
        idx, val = lists.lists(kind)
        ref_idx, ref_val = eps.topk(kind, depth)
        torch.testing.assert_close(val, ref_val)
        assert torch.equal(idx, ref_idx)
    back = NeighborLists.load(lists.save(tmp_path / "l.npz"))
    assert torch.equal(back.image_episode, lists.image_episode)
    assert "episode_images=4,7" in repr(back)


def test_episodic_lists_refuse_an_entry_of_another_episode():
    from pillargraph.data import NeighborLists
    img, txt, t2i, img_intra, txt_intra = _emb()
    whole = NeighborLists.from_embeddings(img, txt, t2i, 6, img_intra, txt_intra, backend="torch")
    state = dict(txt2img=t2i, i2t_index=whole.lists("i2t")[0], i2t_score=whole.lists("i2t")[1],
                 t2i_index=whole.lists("t2i")[0], t2i_score=whole.lists("t2i")[1])
    with pytest.raises(ValueError, match="image_episode: the i2t list of row 0 holds items of another episode"):
        NeighborLists(**state, image_episode=torch.arange(11) % 2)
    with pytest.raises(ValueError, match="image_episode: expected 11"):
        NeighborLists(**state, image_episode=torch.zeros(3, dtype=torch.long))


def test_mixed_splits_hold_every_episode_of_each_split_in_order():
    from pillargraph.data import as_episodes, mix_splits
    a, b = random_bundle(n=8, per=2, d=4, seed=1), random_bundle(n=5, per=3, d=4, seed=2)
    mixed = mix_splits([EpisodicSimilarity.from_bundle(a, (4,)), b])
    assert (mixed.num_episodes, mixed.num_images, mixed.num_texts) == (3, 13, 31)
    assert mixed.episode_sizes == [4, 4, 5]
    torch.testing.assert_close(mixed.episode(2).sim_t2t, b.sim_t2t)
    # as_episodes cuts each split of a list into the episodes, then mixes them
    cut = as_episodes([a, random_bundle(n=8, per=2, d=4, seed=3)], (4,), seed=5)
    assert cut.episode_sizes == [4, 4, 4, 4]
    alone = EpisodicSimilarity.from_bundle(a, (4,), seed=5)
    for e in range(2):
        torch.testing.assert_close(cut.episode(e).sim_i2t, alone.episode(e).sim_i2t)
    # the episodes answer as themselves: top-k within each, ids laid end to end
    idx, _ = mixed.topk("i2i", 3)
    assert torch.equal(idx[8:] - 8, torch.topk(b.sim_i2i, 3, dim=1).indices)


def test_mixed_splits_refuse_lists_and_an_empty_list():
    from pillargraph.data import NeighborLists, as_episodes, mix_splits
    img, txt, t2i, img_intra, txt_intra = _emb()
    lists = NeighborLists.from_embeddings(img, txt, t2i, 6, img_intra, txt_intra, backend="torch")
    with pytest.raises(ValueError, match=r"a.npz b.npz \(split 2 of 2\): only dense bundles can be mixed"):
        as_episodes([random_bundle(), lists], (), name="a.npz b.npz")
    with pytest.raises(ValueError, match="train: expected one or more training splits"):
        mix_splits([])
    with pytest.raises(ValueError, match="train: .*sim_i2i"):
        mix_splits([random_bundle(seed=1), random_bundle(seed=2, intra=False)])
