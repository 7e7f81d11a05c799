"""Named recipes: resolution and overrides, what a run records, and the inductive recipe's online property."""
import json

import pytest
import torch

from pillargraph.cli import main
from pillargraph.rerank import rerank, rerank_queries
from pillargraph.train import RECIPES, fit_reranker, get_recipe, model_from_checkpoint, prepare_run

from ..helpers.tiny import tiny_splits

# the recipes' structure at a size a test trains in seconds
SMALL = {"builder": {"num_pillars": 8, "k_i2t": 8, "k_t2i": 6, "overlap_neighbors": 4},
         "model": {"hidden_channels": 16, "heads": 2}, "train": {"epochs": 1, "batch_size": 64, "warmup_steps": 2}}
SMALL_FLAGS = ["--num-pillars", "8", "--k-i2t", "8", "--k-t2i", "6", "--overlap-neighbors", "4", "--hidden", "16",
               "--heads", "2", "--epochs", "1", "--batch-size", "64"]


def test_the_three_recipes_and_what_they_read():
    assert list(RECIPES) == ["paper", "inductive", "transductive"]
    assert get_recipe(None).name == "inductive"
    assert get_recipe("Transductive").transductive and not get_recipe("inductive").transductive
    assert not get_recipe("paper").builder["node_features"] and not get_recipe("paper").episode_images
    assert "all test queries" in get_recipe("transductive").reads
    with pytest.raises(ValueError, match=r"unknown recipe 'best'; expected one of \['paper', 'inductive'"):
        get_recipe("best")


def test_override_changes_single_fields_and_records_them():
    base = get_recipe("transductive")
    r = base.override(builder={"k_t2i": 8}, model={"hidden_channels": 64}, episode_images=0)
    assert r.builder["k_t2i"] == 8 and r.builder["node_features"] == base.builder["node_features"]
    assert r.model["hidden_channels"] == 64 and r.model["heads"] == base.model["heads"]
    assert r.episode_images == () and base.episode_images == RECIPES["transductive"].episode_images != ()
    rec = r.record()
    assert rec["overrides"] == {"builder": {"k_t2i": 8}, "model": {"hidden_channels": 64}, "episode_images": []}
    assert json.loads(json.dumps(rec)) == rec
    again = r.override(train={"epochs": 2})  # overrides accumulate
    assert again.record()["overrides"]["builder"] == {"k_t2i": 8} and again.train["epochs"] == 2
    with pytest.raises(ValueError, match="episode_images"):
        base.override(episode_images=(1000, 1))


def test_prepare_run_cuts_the_training_bundle_into_the_recipes_episodes():
    train, _, _ = tiny_splits()  # 60 images
    run = prepare_run(get_recipe("inductive").override(episode_images=(25, 30), **SMALL), train, seed=2)
    assert run.train.episode_sizes == [25, 35]  # 5 left over join the last episode
    assert run.config.seed == 2 and run.builder.k_t2i == 6 and run.run_info["recipe"]["name"] == "inductive"


def test_cli_train_records_the_recipe_and_every_resolved_setting(tmp_path):
    train, dev, _ = tiny_splits()
    train.save(tmp_path / "train.npz")
    dev.save(tmp_path / "dev.npz")
    out = tmp_path / "run"
    assert main(["train", "--train", str(tmp_path / "train.npz"), "--dev", str(tmp_path / "dev.npz"),
                 "--out", str(out), "--recipe", "transductive", "--episode-images", "30", *SMALL_FLAGS]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"]["name"] == "transductive" and cfg["recipe"]["transductive"]
    assert cfg["recipe"]["episode_images"] == [30] and cfg["recipe"]["overrides"]["model"]["hidden_channels"] == 16
    assert cfg["builder"]["node_features"] == list(get_recipe("transductive").builder["node_features"])
    assert cfg["builder"]["k_t2i"] == 6 and cfg["model"]["hidden_channels"] == 16 and cfg["train"]["epochs"] == 1
    model = model_from_checkpoint(out / "best.pt")
    assert model.run_info["recipe"] == cfg["recipe"]


def test_cli_refuses_an_unknown_recipe_in_one_line(tmp_path, capsys):
    assert main(["train", "--train", "x.npz", "--dev", "y.npz", "--out", str(tmp_path / "r"),
                 "--recipe", "fastest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown recipe 'fastest'" in err[0]


def test_cli_help_lists_the_recipes_and_what_each_reads(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"  {name}: reads" in out
    assert "all test queries at once (transductive)" in out and "works online" in out


@pytest.fixture(scope="module")
def inductive_model():
    train, dev, test = tiny_splits()
    fitted = fit_reranker(train, dev, recipe=get_recipe("inductive").override(**SMALL), seed=1)
    return fitted, test


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_inductive_one_query_alone_equals_its_row_of_the_batch(inductive_model, direction):
    fitted, test = inductive_model
    assert fitted.result.fusion["output"] == "directions"
    batch = rerank(fitted.model, test)
    rows = batch.sim_i2t if direction == "i2t" else batch.t2i_scores
    n = test.num_images if direction == "i2t" else test.num_texts
    for q in (0, 7, n - 1):
        alone = rerank_queries(fitted.model, test, direction, [q])
        torch.testing.assert_close(alone[0], rows[q], rtol=0, atol=1e-6)
    some = rerank_queries(fitted.model, test, direction, [3, 1, 4])
    torch.testing.assert_close(some, rows[[3, 1, 4]], rtol=0, atol=1e-6)


def test_rerank_queries_refuses_what_reads_other_queries(inductive_model):
    fitted, test = inductive_model
    with pytest.raises(ValueError, match="'fused' output"):
        rerank_queries(fitted.model, test, "i2t", [0], fusion={"i2t": 1.0, "t2i": 1.0, "output": "fused"})
    transductive = get_recipe("transductive").override(**SMALL)
    train, dev, _ = tiny_splits()
    other = fit_reranker(train, dev, recipe=transductive.override(train={"epochs": 1}), seed=0)
    with pytest.raises(ValueError, match="transductive"):
        rerank_queries(other.model, test, "i2t", [0])
