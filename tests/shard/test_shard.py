"""Sharded re-ranking (pillargraph.shard): shard ranges, part files, and merges equal to the unsharded result."""
from dataclasses import replace

import pytest
import torch

from pillargraph.data.neighbors import NeighborLists
from pillargraph.rerank import OUTPUTS, rerank
from pillargraph.rerank import resolve_fusion
from pillargraph.shard import (ShardPart, check_parts, merge_parts, parse_shard, rerank_shard,
                               shard_range)

from ..helpers.tiny import tiny_builder, tiny_model, tiny_splits

BATCH = 8  # small scoring batches, so a 30-image split has several blocks to deal out


@pytest.fixture(scope="module")
def setup():
    _, _, test = tiny_splits()
    builder = tiny_builder()
    model = tiny_model(builder, seed=1).eval()
    model.builder_config = builder.config
    return model, test


def assert_same(a, b):
    """Every field of two bundles or neighbour lists bit-for-bit equal."""
    if isinstance(a, NeighborLists):
        for kind in ("i2t", "t2i"):
            for x, y in zip(a.lists(kind), b.lists(kind)):
                assert torch.equal(x, y)
        return
    for name in ("sim_i2t", "sim_t2i", "txt2img", "sim_i2i", "sim_t2t"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        assert x is None or (x.dtype == y.dtype and torch.equal(x, y)), name


@pytest.mark.parametrize("num,count,block", [(30, 1, 1), (30, 3, 1), (150, 3, 8), (31, 4, 8), (5, 3, 8),
                                             (0, 2, 4), (1000, 7, 1024)])
def test_shard_ranges_tile_the_queries(num, count, block):
    ranges = [shard_range(num, i, count, block) for i in range(1, count + 1)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(r[0] % block == 0 and r[0] <= r[1] for r in ranges)
    sizes = [-(-(b - a) // block) for a, b in ranges]  # blocks per shard
    assert max(sizes) - min(sizes) <= 1


def test_parse_shard():
    assert parse_shard("2/3") == (2, 3) and parse_shard("1/1") == (1, 1)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "1/2/3", "-1/2"):
        with pytest.raises(ValueError, match="shard: expected I/N"):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_merge_equals_unsharded_rerank_bit_for_bit(setup, count):
    model, test = setup
    fusion = (0.7, 0.4)
    parts = [rerank_shard(model, test, i, count, fusion=fusion, output="fused", batch_size=BATCH)
             for i in range(1, count + 1)]
    if count > 1:
        assert all(p.scores["i2t"].stop - p.scores["i2t"].start < test.num_images for p in parts)
    for output in OUTPUTS:
        want = rerank(model, test, fusion=fusion, output=output, batch_size=BATCH)
        got = merge_parts([replace(p, output=output) for p in reversed(parts)], test)
        assert_same(got, want)


def test_merge_of_neighbour_list_parts(setup):
    model, test = setup
    lists = NeighborLists.from_bundle(test, 40)
    parts = [rerank_shard(model, lists, i, 2, fusion=0.5, batch_size=BATCH) for i in (1, 2)]
    assert_same(merge_parts(parts, lists), rerank(model, lists, fusion=0.5, batch_size=BATCH))


def test_empty_shards_merge(setup):
    model, test = setup
    parts = [rerank_shard(model, test, i, 3, fusion=1.0, batch_size=16) for i in (1, 2, 3)]
    assert parts[0].ranges()["i2t"] == (0, 0)  # 30 images = 2 blocks of 16, dealt to 3 shards
    assert_same(merge_parts(parts, test), rerank(model, test, fusion=1.0, batch_size=16))


def test_part_file_round_trip(setup, tmp_path):
    model, test = setup
    part = rerank_shard(model, test, 2, 3, fusion=(0.2, 0.9), output="directions", batch_size=BATCH,
                        inputs={"split": {"size": 1, "sha256": "ab"}}, split_path="x.npz")
    back = ShardPart.load(part.save(tmp_path / "p.npz"))
    assert back.meta() == part.meta() and back.source == str(tmp_path / "p.npz")
    for d in ("i2t", "t2i"):
        for name in ("node_type", "candidate_mask", "node_index", "base_score", "learned"):
            assert torch.equal(getattr(back.scores[d], name), getattr(part.scores[d], name))
    (tmp_path / "junk.npz").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(ValueError, match="junk.npz"):
        ShardPart.load(tmp_path / "junk.npz")


@pytest.fixture(scope="module")
def three(setup):
    model, test = setup
    return [replace(rerank_shard(model, test, i, 3, fusion=0.5, batch_size=BATCH), source=f"p{i}.npz")
            for i in (1, 2, 3)]


def test_missing_repeated_and_mismatched_parts_are_refused(setup, three):
    _, test = setup
    p1, p2, p3 = three
    with pytest.raises(ValueError, match=r"^missing shard\(s\) 2 of 3 \(got 1, 3\) in p1.npz, p3.npz$"):
        check_parts([p1, p3])
    with pytest.raises(ValueError, match=r"^shard 2/3 given twice: p2.npz and p2b.npz$"):
        check_parts([p1, p2, replace(p2, source="p2b.npz"), p3])
    with pytest.raises(ValueError, match=r"^p3.npz: not from the same run as p1.npz \(different fusion weights\)$"):
        check_parts([p1, p2, replace(p3, fusion=(0.5, 0.6))])
    with pytest.raises(ValueError, match=r"different input files"):
        check_parts([p1, p2, replace(p3, inputs={"checkpoint": {"size": 3, "sha256": "00"}})])
    with pytest.raises(ValueError, match=r"different shard count"):
        check_parts([p1, p2, replace(p3, count=4, index=4)])
    with pytest.raises(ValueError, match=r"^parts: no part files given$"):
        check_parts([])
    bad = replace(p2, scores=dict(p2.scores, i2t=replace(p2.scores["i2t"], start=0)))
    with pytest.raises(ValueError, match="p2.npz: query ranges"):
        check_parts([p1, bad, p3])
    with pytest.raises(ValueError, match="split: has 60 images"):
        merge_parts(three, tiny_splits()[0])


def test_resolve_fusion_follows_rerank():
    class M(torch.nn.Module):
        fusion_weights = {"i2t": 0.3, "t2i": 0.6, "output": "directions"}
    assert resolve_fusion(M()) == (0.3, 0.6, "directions")
    with pytest.raises(ValueError, match="chosen on dev for directions, not 'i2t'"):
        resolve_fusion(M(), output="i2t")  # weights belong to the mode they were chosen for
    per_output = dict(M.fusion_weights, per_output={"i2t": {"i2t": 0.9, "t2i": 0.0, "dev_rsum": 0.0}})
    assert resolve_fusion(M(), per_output, output="i2t") == (0.9, 0.0, "i2t")
    assert resolve_fusion(M(), 0.5) == (0.5, 0.5, "fused")
    assert resolve_fusion(torch.nn.Module(), (0.1, 0.2)) == (0.1, 0.2, "fused")
    with pytest.raises(ValueError, match="no dev-selected fusion weights"):
        resolve_fusion(torch.nn.Module())  # never an assumed 1.0
    with pytest.raises(ValueError, match="output: unknown output"):
        resolve_fusion(M(), output="both")
