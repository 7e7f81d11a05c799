"""Sharded neighbour lists (pillargraph.data.list_shards): merges equal to the unsharded search."""
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse
import torch

from pillargraph.data.files import load_split, npz_format
from pillargraph.data.list_shards import ListPart, check_list_parts, merge_list_parts, neighbor_shard
from pillargraph.data.neighbors import NeighborLists
from pillargraph.data.synthetic import SyntheticConfig, SyntheticWorld


@pytest.fixture(scope="module")
def split():
    return SyntheticWorld(SyntheticConfig(), seed=4).sample(29, split="test")


def assert_same(a, b):
    """Every field of two neighbour lists bit-for-bit equal (the fields save() writes)."""
    x, y = a._state(), b._state()
    assert x.keys() == y.keys()
    for name in x:
        assert (x[name] is None) == (y[name] is None), name
        if isinstance(x[name], torch.Tensor):
            assert x[name].dtype == y[name].dtype and torch.equal(x[name], y[name]), name
        else:
            assert x[name] == y[name], name


def shards(args, count, **opts):
    return [neighbor_shard(*args, index=i, count=count, backend="torch", **opts) for i in range(1, count + 1)]


@pytest.mark.parametrize("count,opts,intra,dtype", [
    (4, dict(chunk_size=3), True, torch.float32),
    (5, dict(chunk_size=7, keep_embeddings=False), True, torch.float32),
    (12, dict(chunk_size=5), False, torch.float64),  # 6 image blocks: empty float64 shards
    (2, dict(), True, torch.float32),  # default blocks: one block, shard 2 is empty
    (40, dict(chunk_size=2), True, torch.float32),  # more shards than image blocks: empty shards
])
def test_merge_equals_from_embeddings(split, count, opts, intra, dtype):
    args = (split.img_emb.to(dtype), split.txt_emb.to(dtype), split.txt2img, 12,
            split.img_intra_emb if intra else None, split.txt_intra_emb if intra else None)
    full = NeighborLists.from_embeddings(*args, backend="torch", **opts)
    parts = shards(args, count, **opts)
    assert_same(merge_list_parts(parts[::-1]), full)


def test_parts_round_trip_through_files(split, tmp_path):
    args = (split.img_emb, split.txt_emb, split.txt2img, 6, split.img_intra_emb, None)
    parts = shards(args, 3, chunk_size=4, inputs={"embeddings": {"size": 1, "sha256": "x"}})
    loaded = [ListPart.load(p.save(tmp_path / f"p{p.index}.npz")) for p in parts]
    assert npz_format(tmp_path / "p1.npz") == "lists-part"
    assert [p.ranges() for p in loaded] == [p.ranges() for p in parts] and loaded[1].inputs == parts[1].inputs
    assert_same(merge_list_parts(loaded), NeighborLists.from_embeddings(*args, chunk_size=4, backend="torch"))
    with pytest.raises(ValueError, match="one part of a sharded neighbour search; assemble the parts"):
        load_split(tmp_path / "p1.npz")


def test_bad_parts_and_inputs_are_refused(split):
    args = (split.img_emb, split.txt_emb, split.txt2img, 6)
    parts = shards(args, 3, chunk_size=4)
    with pytest.raises(ValueError, match="missing shard"):
        check_list_parts(parts[:2])
    with pytest.raises(ValueError, match="different kept arrays"):
        check_list_parts(parts[:2] + shards(args, 3, chunk_size=4, keep_embeddings=False)[2:])
    with pytest.raises(ValueError, match="different search blocks"):
        check_list_parts(parts[:2] + shards(args, 3, chunk_size=8)[2:])
    damaged = replace(parts[1], row_ranges={**parts[1].row_ranges, "t2t": (0, 3)})
    with pytest.raises(ValueError, match="shard 2/3: query ranges .* the part is damaged"):
        check_list_parts([parts[0], damaged, parts[2]])
    with pytest.raises(ValueError, match="needs dense embeddings"):
        neighbor_shard(scipy.sparse.csr_matrix(split.img_emb.numpy()), split.txt_emb, split.txt2img, 6,
                       index=1, count=2)
    with pytest.raises(ValueError, match="img_intra_emb: expected 29 rows"):
        neighbor_shard(*args, split.img_intra_emb[:5], index=1, count=2)
    with pytest.raises(ValueError, match="k: expected a positive int"):
        neighbor_shard(split.img_emb, split.txt_emb, split.txt2img, 0, index=1, count=2)
    with pytest.raises(ValueError, match="shard: expected 1 <= index <= count"):
        neighbor_shard(*args, index=3, count=2)
    bad = np.asarray(split.txt2img).copy()
    bad[:] = 0  # every image but the first without captions: found by the merge, as by the unsharded search
    with pytest.raises(ValueError, match="have no caption"):
        merge_list_parts(shards((split.img_emb, split.txt_emb, bad, 6), 2, chunk_size=4))
