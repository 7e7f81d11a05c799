"""benchmarks/coco_scale.py at a tiny scale: every stage reports its seconds and peak RSS."""
import json

import pytest

from benchmarks import coco_scale

TINY = ["--images", "60", "--test-images", "40", "--dev-images", "40", "--threads", "1", "--seed", "1"]
SINGLE = ["embeddings", "lists", "graphs", "epoch", "rerank"]


def run(tmp_path, name, *extra):
    out = tmp_path / name
    assert coco_scale.main([*TINY, "--workdir", str(tmp_path / "work"), "--out", str(out), *extra]) == 0
    return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


def check_stage(stage):
    assert stage["seconds"] > 0 and stage["wall_s"] >= stage["seconds"] * 0.99
    assert 0 < stage["peak_rss_gib"] < 24


def test_single_process_stages_in_process(tmp_path):
    payload, md = run(tmp_path, "all", "--stages", ",".join(SINGLE), "--in-process")
    assert payload["complete"] and list(payload["stages"]) == SINGLE
    for stage in payload["stages"].values():
        check_stage(stage)
    cfg = payload["config"]
    assert cfg["k"] == coco_scale.list_depth(coco_scale.components(coco_scale.train_namespace(
        coco_scale.build_argparser().parse_args(TINY), coco_scale.Paths(tmp_path)))[0])
    assert cfg["train"]["epochs"] == 1 and cfg["builder"]["num_pillars"] == 32  # the CLI defaults
    assert payload["command"].startswith("python benchmarks/coco_scale.py --images 60")
    epoch = payload["stages"]["epoch"]
    assert not epoch["partial"] and epoch["steps"] == epoch["steps_per_epoch"] == 3  # 300 captions, batch 128
    assert epoch["epoch_s"] < epoch["fit_s"] and epoch["fusion"] is not None
    graphs = payload["stages"]["graphs"]
    assert (graphs["i2t"]["graphs"], graphs["t2i"]["graphs"]) == (60, 300)
    rr = payload["stages"]["rerank"]
    assert rr["queries"] == {"i2t": 40, "t2i": 200} and rr["reranked"]["rsum"] > 0
    assert "| epoch |" in md and "partial epoch" not in md

    # a partial epoch says so, in the JSON and in the report
    payload, md = run(tmp_path, "partial", "--stages", "epoch", "--in-process", "--max-steps", "2")
    epoch = payload["stages"]["epoch"]
    assert epoch["partial"] and epoch["steps"] == 2
    assert "partial epoch: 2 of 3 steps" in md


def test_stage_in_its_own_process(tmp_path):
    payload, _ = run(tmp_path, "child", "--stages", "embeddings")
    stage = payload["stages"]["embeddings"]
    check_stage(stage)
    assert stage["rss_scope"] == "the stage's own process"
    assert stage["train"]["captions"] == 300 and stage["test"]["images"] == 40


@pytest.mark.slow
def test_dist_stage_two_gloo_processes(tmp_path):
    run(tmp_path, "prep", "--stages", "embeddings,lists", "--in-process")
    payload, md = run(tmp_path, "dist", "--stages", "dist", "--max-steps", "2")
    dist = payload["stages"]["dist"]
    check_stage(dist)
    assert [r["rank"] for r in dist["ranks"]] == [0, 1] and {r["backend"] for r in dist["ranks"]} == {"gloo"}
    assert dist["single"]["torch_threads"] == 2 and dist["steps"] == 2 and dist["partial"]
    assert dist["speedup"] == pytest.approx(dist["epoch_s_single"] / dist["epoch_s_dist"])
    assert "partial epoch: 2 of 3 steps" in md
