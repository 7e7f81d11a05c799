"""``pillargraph rerank --shard I/N`` and ``pillargraph merge``: the merge equals the unsharded rerank."""
import pytest
import torch

from pillargraph.cli import main
from pillargraph.data.neighbors import NeighborLists
from pillargraph.train import CHECKPOINT_FORMAT

from ..helpers.tiny import tiny_builder, tiny_model, tiny_splits
from ..helpers.shards import merge_error, same_npz


def save_checkpoint(path, seed, fusion):
    builder = tiny_builder()
    model = tiny_model(builder, seed=seed)
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": model.to_config(), "builder_config": builder.config,
                "model": model.state_dict(), "fusion": fusion}, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_cli")
    _, _, test = tiny_splits()
    test.save(root / "test.npz")
    NeighborLists.from_bundle(test, 40).save(root / "lists.npz")
    save_checkpoint(root / "a.pt", 1, {"i2t": 0.6, "t2i": 0.3, "dev_rsum": 0.0, "base_rsum": 0.0, "output": "fused",
                                       "per_output": {"directions": {"i2t": 0.2, "t2i": 0.7, "dev_rsum": 0.0}}})
    save_checkpoint(root / "b.pt", 2, None)
    return root


def rerank(files, split, out, *extra):
    return main(["rerank", str(files / split), "--checkpoint", str(files / "a.pt"), "--out", str(out),
                 "--batch-size", "8", *extra])



@pytest.mark.parametrize("split,count,extra", [("test.npz", 1, []), ("test.npz", 2, []), ("test.npz", 3, []),
                                               ("test.npz", 3, ["--output", "directions"]),
                                               ("lists.npz", 2, ["--fusion-weight", "0.5,0.8"])])
def test_merge_equals_unsharded_rerank(files, tmp_path, capsys, split, count, extra):
    assert rerank(files, split, tmp_path / "full.npz", *extra) == 0
    parts = [tmp_path / f"part{i}.npz" for i in range(1, count + 1)]
    for i, part in enumerate(parts, 1):
        assert rerank(files, split, part, "--shard", f"{i}/{count}", *extra) == 0
        assert f"shard {i}/{count}: image queries" in capsys.readouterr().out
    assert main(["merge", *map(str, reversed(parts)), "--out", str(tmp_path / "merged.npz")]) == 0
    assert f"{count} shards" in capsys.readouterr().out
    same_npz(tmp_path / "merged.npz", tmp_path / "full.npz")



def test_bad_parts_are_one_line_errors(files, tmp_path, capsys):
    p = {i: tmp_path / f"p{i}.npz" for i in (1, 2, 3)}
    for i in p:
        assert rerank(files, "test.npz", p[i], "--shard", f"{i}/3") == 0
    other = tmp_path / "other.npz"
    assert main(["rerank", str(files / "test.npz"), "--checkpoint", str(files / "b.pt"), "--out", str(other),
                 "--batch-size", "8", "--shard", "3/3", "--fusion-weight", "1"]) == 0
    out = tmp_path / "m.npz"
    assert "missing shard(s) 2 of 3 (got 1, 3)" in merge_error(capsys, p[1], p[3], "--out", out)
    assert "shard 3/3 given twice" in merge_error(capsys, p[1], p[2], p[3], p[3], "--out", out)
    assert "not from the same run" in merge_error(capsys, p[1], p[2], other, "--out", out)
    err = merge_error(capsys, p[1], p[2], p[3], "--out", out, "--split", files / "lists.npz")
    assert "not the split the parts were made from" in err
    assert "holds a bundle, not a re-ranking part" in merge_error(capsys, p[1], files / "test.npz", "--out", out)
    assert not out.exists()
    assert rerank(files, "test.npz", tmp_path / "x.npz", "--shard", "4/3") == 2
    assert "shard: expected I/N with 1 <= I <= N" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_shard_from_torchrun_environment(files, tmp_path, capsys, monkeypatch):
    assert rerank(files, "test.npz", tmp_path / "full.npz") == 0
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert rerank(files, "test.npz", tmp_path / "part-{shard}.npz", "--shard", "torchrun") == 0
        assert f"shard {rank + 1}/2" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "part-1.npz"), str(tmp_path / "part-2.npz"),
                 "--out", str(tmp_path / "merged.npz")]) == 0
    same_npz(tmp_path / "merged.npz", tmp_path / "full.npz")
    assert rerank(files, "test.npz", tmp_path / "part.npz", "--shard", "torchrun") == 2
    assert "put {shard} in the name" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "2")
    assert rerank(files, "test.npz", tmp_path / "p{shard}.npz", "--shard", "torchrun") == 2
    assert "expected 0 <= RANK < WORLD_SIZE" in capsys.readouterr().err
