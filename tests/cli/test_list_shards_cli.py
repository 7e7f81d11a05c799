"""``pillargraph neighbors --shard I/N`` and ``pillargraph merge``: the merge equals the unsharded lists."""
import numpy as np
import pytest

from pillargraph.cli import main
from pillargraph.data.synthetic import SyntheticConfig, SyntheticWorld
from pillargraph.shard import ShardPart

from ..helpers.shards import merge_error, same_npz


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("list_shards_cli")
    world = SyntheticWorld(SyntheticConfig(), seed=5)
    for name, split in (("a", "test"), ("b", "dev")):
        s = world.sample(23, split=split)
        np.savez(root / f"{name}.emb.npz", img_emb=s.img_emb.numpy(), txt_emb=s.txt_emb.numpy(),
                 txt2img=s.txt2img.numpy(), img_intra_emb=s.img_intra_emb.numpy(),
                 txt_intra_emb=s.txt_intra_emb.numpy())
    s.to_bundle().save(root / "bundle.npz")
    return root


def neighbors(files, out, *extra, name="a", k=9):
    return main(["neighbors", str(files / f"{name}.emb.npz"), "--k", str(k), "--out", str(out),
                 "--backend", "torch", "--chunk-size", "4", "--quiet", *extra])



@pytest.mark.parametrize("count,extra", [(1, []), (2, []), (3, []), (3, ["--no-embeddings"])])
def test_merge_equals_unsharded_neighbors(files, tmp_path, capsys, count, extra):
    assert neighbors(files, tmp_path / "full.npz", *extra) == 0
    parts = [tmp_path / f"part{i}.npz" for i in range(1, count + 1)]
    for i, part in enumerate(parts, 1):
        assert neighbors(files, part, "--shard", f"{i}/{count}", *extra) == 0
        assert f"shard {i}/{count}: image rows" in capsys.readouterr().out
    assert main(["merge", *map(str, reversed(parts)), "--out", str(tmp_path / "merged.npz")]) == 0
    assert f"from {count} shards" in capsys.readouterr().out
    same_npz(tmp_path / "merged.npz", tmp_path / "full.npz")



def test_bad_parts_are_one_line_errors(files, tmp_path, capsys):
    p = {i: tmp_path / f"p{i}.npz" for i in (1, 2, 3)}
    for i in p:
        assert neighbors(files, p[i], "--shard", f"{i}/3") == 0
    other_input, other_k = tmp_path / "other_input.npz", tmp_path / "other_k.npz"
    assert neighbors(files, other_input, "--shard", "3/3", name="b") == 0
    assert neighbors(files, other_k, "--shard", "3/3", k=8) == 0
    out = tmp_path / "m.npz"
    assert "missing shard(s) 2 of 3 (got 1, 3)" in merge_error(capsys, p[1], p[3], "--out", out)
    assert "shard 3/3 given twice" in merge_error(capsys, p[1], p[2], p[3], p[3], "--out", out)
    assert "(different input files)" in merge_error(capsys, p[1], p[2], other_input, "--out", out)
    assert "(different k)" in merge_error(capsys, p[1], p[2], other_k, "--out", out)
    lists = bundle_lists(files, capsys)
    assert "holds neighbour lists, not a neighbour-list part" in merge_error(capsys, p[1], p[2], lists, "--out", out)
    assert "leave --split out" in merge_error(capsys, p[1], p[2], p[3], "--out", out, "--split", files / "bundle.npz")
    rerank_part = tmp_path / "rerank-part.npz"  # the keys npz_format tells a re-ranking part by
    np.savez(rerank_part, meta=np.array("{}"), i2t_learned=np.zeros((1, 1)))
    assert "holds a re-ranking part, not a neighbour-list part" in merge_error(capsys, p[1], rerank_part, "--out", out)
    with pytest.raises(ValueError, match="holds a neighbour-list part, not a re-ranking part"):
        ShardPart.load(p[1])
    assert not out.exists()
    assert neighbors(files, tmp_path / "x.npz", "--shard", "0/3") == 2
    assert "shard: expected I/N with 1 <= I <= N" in capsys.readouterr().err
    assert main(["neighbors", str(files / "bundle.npz"), "--k", "5", "--out", str(tmp_path / "x.npz"),
                 "--shard", "1/2"]) == 2
    assert "--shard: needs an embeddings file" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def bundle_lists(files, capsys):
    out = files / "bundle.lists.npz"
    assert main(["neighbors", str(files / "bundle.npz"), "--k", "5", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return out


def test_shard_from_torchrun_environment(files, tmp_path, capsys, monkeypatch):
    assert neighbors(files, tmp_path / "full.npz") == 0
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert neighbors(files, tmp_path / "part-{shard}.npz", "--shard", "torchrun") == 0
        assert f"shard {rank + 1}/2" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "part-1.npz"), str(tmp_path / "part-2.npz"),
                 "--out", str(tmp_path / "merged.npz")]) == 0
    same_npz(tmp_path / "merged.npz", tmp_path / "full.npz")
    assert neighbors(files, tmp_path / "part.npz", "--shard", "torchrun") == 2
    assert "put {shard} in the name" in capsys.readouterr().err
