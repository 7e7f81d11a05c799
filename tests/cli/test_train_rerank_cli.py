import json

import pytest

from pillargraph import SimilarityBundle, evaluate
from pillargraph.cli import main
from pillargraph.data.synthetic import synthetic_splits

SMALL = ["--num-pillars", "8", "--k-i2t", "8", "--k-t2i", "4", "--overlap-neighbors", "4",
         "--hidden", "16", "--heads", "2", "--epochs", "1", "--batch-size", "64"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train, dev, test = synthetic_splits(40, 20, 20, seed=1)
    for name, b in (("train", train), ("dev", dev), ("test", test)):
        b.save(root / f"{name}.npz")
    return root


def test_train_then_rerank(files, capsys):
    run = files / "run"
    assert main(["train", "--train", str(files / "train.npz"), "--dev", str(files / "dev.npz"),
                 "--out", str(run), *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 1 and (run / "best.pt").exists()
    out = files / "test.reranked.npz"
    assert main(["rerank", "--checkpoint", str(run / "best.pt"), str(files / "test.npz"),
                 "--out", str(out)]) == 0
    assert "re-ranked" in capsys.readouterr().out
    reranked = SimilarityBundle.load(out)
    assert reranked.sim_i2t.shape == (20, 100)
    # fusion weight 0 reproduces the base ranking
    base_out = files / "test.base.npz"
    assert main(["rerank", "--checkpoint", str(run / "best.pt"), str(files / "test.npz"),
                 "--out", str(base_out), "--fusion-weight", "0"]) == 0
    base = SimilarityBundle.load(files / "test.npz")
    assert evaluate(SimilarityBundle.load(base_out)) == pytest.approx(evaluate(base))
    # never overwrite without --force, never clobber a run
    before = out.read_bytes()
    assert main(["rerank", "--checkpoint", str(run / "best.pt"), str(files / "test.npz"),
                 "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert main(["train", "--train", str(files / "train.npz"), "--dev", str(files / "dev.npz"),
                 "--out", str(run), *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_fusion_outputs_option_reaches_the_checkpoint(files, capsys):
    run = files / "run-directions"
    assert main(["train", "--train", str(files / "train.npz"), "--dev", str(files / "dev.npz"),
                 "--out", str(run), "--fusion-outputs", "directions", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fusion"]["output"] == "directions" and list(summary["fusion"]["by_output"]) == ["directions"]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["fusion_outputs"] == ["directions"]
    from pillargraph.train import model_from_checkpoint
    assert model_from_checkpoint(run / "best.pt").fusion_weights["output"] == "directions"


def test_several_training_splits_train_one_model_on_all_of_them(files, capsys):
    """`--train A.npz B.npz`: e.g. the same images under two base scorers; each cut into the recipe's episodes."""
    other = files / "train.other.npz"
    synthetic_splits(40, 20, 20, seed=7)[0].save(other)
    steps = {}
    for name, train in (("one", [files / "train.npz"]), ("two", [files / "train.npz", other])):
        run = files / f"run-{name}-scorer"
        assert main(["train", "--train", *map(str, train), "--dev", str(files / "dev.npz"), "--out", str(run),
                     "--episode-images", "20", *SMALL, "--batch-size", "8"]) == 0
        assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
        steps[name] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        assert json.loads((run / "config.json").read_text())["train_splits"] == [str(p.resolve()) for p in train]
    assert steps["two"] == 2 * steps["one"]  # both splits' graphs, one epoch
    lists = files / "train.lists.npz"
    assert main(["neighbors", str(files / "train.npz"), "--k", "12", "--out", str(lists), "--quiet"]) == 0
    assert main(["train", "--train", str(files / "train.npz"), str(lists), "--dev", str(files / "dev.npz"),
                 "--out", str(files / "run-mixed-lists"), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(split 2 of 2): only dense bundles can be mixed" in err[0]


def test_bad_inputs_are_one_line_errors(files, capsys):
    assert main(["rerank", "--checkpoint", str(files / "missing.pt"), str(files / "test.npz"),
                 "--out", str(files / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "Traceback" not in err
    (files / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["rerank", "--checkpoint", str(files / "junk.pt"), str(files / "test.npz"),
                 "--out", str(files / "x.npz")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--train", str(files / "train.npz"), "--dev", str(files / "dev.npz"),
              "--out", str(files / "r2"), "--anchor", "middle"])
    assert exc.value.code == 2
    assert main(["train", "--train", str(files / "train.npz"), "--dev", str(files / "dev.npz"),
                 "--out", str(files / "r3"), "--layer", "nope", *SMALL[:-4]]) == 2
    assert "nope" in capsys.readouterr().err
