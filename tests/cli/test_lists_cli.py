"""The command line on neighbour lists: neighbors, then train / rerank / evaluate / baseline from lists."""
import json

import numpy as np
import pytest

from pillargraph.baselines import get_reranker
import torch

from pillargraph import SimilarityBundle, evaluate
from pillargraph.baselines import krnn
from pillargraph.cli import main
from pillargraph.data import NeighborLists
from pillargraph.data.synthetic import SyntheticConfig, SyntheticWorld
from pillargraph.metrics import evaluate_lists

SMALL = ["--num-pillars", "8", "--k-i2t", "8", "--k-t2i", "4", "--overlap-neighbors", "4",
         "--hidden", "16", "--heads", "2", "--epochs", "1", "--batch-size", "64", "--patience", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    world = SyntheticWorld(SyntheticConfig(), seed=3)
    for name, n in (("train", 40), ("dev", 30), ("test", 30)):
        split = world.sample(n, split=name)
        np.savez(root / f"{name}.emb.npz", img_emb=split.img_emb.numpy(), txt_emb=split.txt_emb.numpy(),
                 txt2img=split.txt2img.numpy(), img_intra_emb=split.img_intra_emb.numpy(),
                 txt_intra_emb=split.txt_intra_emb.numpy())
        split.to_bundle().save(root / f"{name}.npz")
    return root


def neighbors(files, name, k, capsys):
    out = files / f"{name}.{k}.lists.npz"
    if out.exists():
        return out
    assert main(["neighbors", str(files / f"{name}.emb.npz"), "--k", str(k), "--out", str(out),
                 "--backend", "torch", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    return out


def test_neighbors_from_embeddings_and_from_a_bundle(files, capsys):
    lists = NeighborLists.load(neighbors(files, "test", 20, capsys))
    bundle = SimilarityBundle.load(files / "test.npz")
    for kind, m in (("i2t", bundle.sim_i2t), ("t2t", bundle.sim_t2t)):
        np.testing.assert_allclose(lists.topk(kind, 20)[1].numpy(), torch.topk(m, 20).values.numpy(), atol=1e-5)
    out = files / "from_bundle.npz"
    assert main(["neighbors", str(files / "test.npz"), "--k", "20", "--out", str(out), "--quiet"]) == 0
    assert NeighborLists.load(out).depth("t2i") == 20
    assert main(["neighbors", str(files / "test.npz"), "--k", "20", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_train_and_rerank_from_lists_equal_the_dense_bundle(files, capsys):
    train_lists, test_lists = neighbors(files, "train", 40, capsys), neighbors(files, "test", 40, capsys)
    runs = {}
    for name, train in (("dense", files / "train.npz"), ("lists", train_lists)):
        run = files / f"run_{name}"
        assert main(["train", "--train", str(train), "--dev", str(files / "dev.npz"), "--out", str(run),
                     *SMALL]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    assert runs["dense"]["best_dev_rsum"] == pytest.approx(runs["lists"]["best_dev_rsum"], abs=1e-6)
    assert runs["dense"]["fusion"] == runs["lists"]["fusion"]
    ckpt = str(files / "run_lists" / "best.pt")
    dense_out, lists_out = files / "test.rr.npz", files / "test.rr.lists.npz"
    assert main(["rerank", "--checkpoint", ckpt, str(files / "test.npz"), "--out", str(dense_out)]) == 0
    assert main(["rerank", "--checkpoint", ckpt, str(test_lists), "--out", str(lists_out)]) == 0
    dense = evaluate(SimilarityBundle.load(dense_out))
    listed = evaluate_lists(NeighborLists.load(lists_out))
    for key in listed:
        assert listed[key] == pytest.approx(dense[key])
    capsys.readouterr()
    assert main(["evaluate", str(lists_out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rsum"] == pytest.approx(dense["rsum"])
    assert main(["evaluate", str(lists_out), "--folds", "2"]) == 2
    assert "dense bundle" in capsys.readouterr().err


def test_baseline_on_lists(files, capsys):
    lists_path = neighbors(files, "test", 150, capsys)  # complete lists: reverse ranks are exact
    out = files / "krnn.lists.npz"
    assert main(["baseline", "krnn", str(lists_path), "--out", str(out)]) == 0
    got = evaluate_lists(NeighborLists.load(out))
    dense = SimilarityBundle.load(files / "test.npz")
    scores = krnn(dense)
    from pillargraph.baselines import evaluate_rescored
    ref = evaluate_rescored(scores, dense)
    for key in got:
        assert got[key] == pytest.approx(ref[key])
    for name in ("alpha_qe", "dual_softmax", "gnn_rerank", "dba"):  # scored from the lists: the dense result
        out = files / f"{name}.lists.npz"
        assert main(["baseline", name, str(lists_path), "--out", str(out)]) == 0
        got = evaluate_lists(NeighborLists.load(out))
        ref = evaluate_rescored(get_reranker(name)(dense), dense)
        for key in got:
            assert got[key] == pytest.approx(ref[key]), (name, key)
    assert main(["baseline", "diffusion", str(lists_path), "--out", str(files / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert "needs a dense bundle" in err and "krnn" in err and "gnn_rerank" in err


def test_episodic_lists_train_the_model_the_dense_bundle_trains(files, capsys):
    """`neighbors --episode-images` + `train` from the lists = `train` from the dense bundle, same episodes."""
    out = files / "train.episodes.lists.npz"
    assert main(["neighbors", str(files / "train.emb.npz"), "--k", "100", "--episode-images", "15,25",
                 "--out", str(out), "--backend", "torch", "--quiet"]) == 0
    lists = NeighborLists.load(out)
    assert sorted(lists.episode_sizes) == [15, 25] and "episode_images=15,25" in capsys.readouterr().out
    runs = {}
    flags = [*SMALL, "--recipe", "transductive", "--episode-images", "15,25"]
    for name, train in (("dense", files / "train.npz"), ("lists", out)):
        assert main(["train", "--train", str(train), "--dev", str(files / "dev.npz"),
                     "--out", str(files / f"run_episodes_{name}"), *flags]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    assert runs["dense"]["best_dev_rsum"] == pytest.approx(runs["lists"]["best_dev_rsum"], abs=1e-4)
    # lists over the whole split cannot be cut into episodes: one line says how to build them
    whole = neighbors(files, "train", 40, capsys)
    assert main(["train", "--train", str(whole), "--dev", str(files / "dev.npz"), "--out", str(files / "r3"),
                 *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--episode-images 15,25" in err[0] and "pillargraph neighbors" in err[0]
    assert main(["train", "--train", str(out), "--dev", str(files / "dev.npz"), "--out", str(files / "r4"),
                 *SMALL, "--episode-images", "20"]) == 2
    assert "searched in episodes of 15,25 images" in capsys.readouterr().err
