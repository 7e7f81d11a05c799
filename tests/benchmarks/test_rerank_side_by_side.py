import argparse

from benchmarks import rerank_side_by_side as sbs
from benchmarks.common import REPO
from pillargraph.train import Trainer
from ..helpers.tiny import tiny_builder, tiny_config, tiny_model


def test_each_version_runs_in_its_own_process_and_the_best_round_is_compared(tiny_splits, tmp_path):
    train, dev, test = tiny_splits
    builder = tiny_builder()
    Trainer(tiny_model(builder), builder, tiny_config(epochs=1), out_dir=tmp_path / "run").fit(train, dev)
    test.save(tmp_path / "test.npz")
    args = argparse.Namespace(checkpoint=str(tmp_path / "run" / "best.pt"), split=str(tmp_path / "test.npz"),
                              rounds=2, threads=1, reference_ref="HEAD")
    runs = sbs.run_all(args, {"reference": REPO, "this": REPO}, tmp_path)  # the child script on today's API
    assert [len(r) for r in runs.values()] == [2, 2]
    s = sbs.summary(runs)
    assert s["rsum"]["reference"] == s["rsum"]["this"] and s["base_rsum"] > 0
    for part in ("graphs_s", "score_s", "rerank_s"):
        assert s["best"]["this"][part] == min(r[part] for r in runs["this"])
        assert s["ratio"][part] == s["best"]["reference"][part] / s["best"]["this"][part]
    assert "graph building: reference" in sbs.report(args, s)


def test_the_reference_worktree_is_removed_on_exit():
    import subprocess
    from benchmarks.train_side_by_side import reference_worktree

    with reference_worktree("HEAD", "test-worktree-") as (work, tree):
        assert (tree / "pillargraph" / "__init__.py").is_file() and tree.parent == work
    listed = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert not work.exists() and str(tree) not in listed
