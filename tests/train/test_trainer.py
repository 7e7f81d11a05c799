import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


from pillargraph.rerank import rerank
from pillargraph.train import TrainConfig, Trainer, load_checkpoint, model_from_checkpoint

from ..helpers.tiny import tiny_builder, tiny_config, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_fit_writes_run_and_reloads(tiny_splits, tmp_path):
    train, dev, test = tiny_splits
    builder = tiny_builder()
    model = tiny_model(builder)
    result = Trainer(model, builder, tiny_config(), out_dir=tmp_path / "run").fit(train, dev)
    run = tmp_path / "run"
    assert {"last.pt", "best.pt", "config.json", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert all("dev" in r and "loss_total" in r for r in lines)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["builder"]["num_pillars"] == 8
    state = load_checkpoint(run / "best.pt")
    assert state["epoch"] == result.best_epoch and state["fusion"] == result.fusion
    assert 0.0 <= result.fusion["i2t"] <= 1.0
    # the reloaded model re-ranks exactly as the trained one
    again = model_from_checkpoint(run / "best.pt")
    a = rerank(model, test, builder).sim_i2t
    b = rerank(again, test).sim_i2t
    assert torch.allclose(a, b, atol=1e-6)
    # dev-selected fusion is never worse than the base on dev
    assert result.fusion["dev_rsum"] >= result.fusion["base_rsum"]


def test_seeded_runs_are_identical(tiny_splits):
    train, dev, _ = tiny_splits
    histories = []
    for _ in range(2):
        builder = tiny_builder()
        res = Trainer(tiny_model(builder), builder, tiny_config(epochs=2, select_fusion=False)).fit(train, dev)
        histories.append([(r["loss_total"], r["dev"]["rsum"]) for r in res.history])
    assert histories[0] == histories[1]


def test_existing_run_is_not_overwritten(tiny_splits, tmp_path):
    train, dev, _ = tiny_splits
    builder = tiny_builder()
    Trainer(tiny_model(builder), builder, tiny_config(epochs=1, select_fusion=False), out_dir=tmp_path).fit(train, dev)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(tiny_model(builder), builder, tiny_config(epochs=1), out_dir=tmp_path).fit(train, dev, resume=False)
    with pytest.raises(ValueError, match=r"^--epochs: 1 in the run in .*, 2 now; resume with the same settings"):
        Trainer(tiny_model(builder), builder, tiny_config(epochs=2), out_dir=tmp_path).fit(train, dev)
    with pytest.raises(ValueError, match=r"^--layers: 2 in the run in .*, 1 now"):  # before any weight is loaded
        Trainer(tiny_model(builder, num_layers=1), builder, tiny_config(epochs=1, select_fusion=False),
                out_dir=tmp_path).fit(train, dev)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_ablation_switches_train(tiny_splits):
    train, dev, _ = tiny_splits
    for kw, cfg in ((dict(), tiny_config(epochs=1, alignment=0.0, mirror_contrastive=0.0, select_fusion=False)),
                    (dict(use_edge_weight=False), tiny_config(epochs=1, select_fusion=False)),
                    (dict(layer="gcn"), tiny_config(epochs=1, select_fusion=False))):
        builder = tiny_builder()
        res = Trainer(tiny_model(builder, **kw), builder, cfg).fit(train, dev)
        assert res.epochs_run == 1
        if cfg.alignment == 0:
            assert not any(k.startswith("loss_alignment") for k in res.history[0])


def test_bad_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochs": 1, "speed": 3})


def _train_cmd(data, out, epochs):
    return [sys.executable, "-m", "pillargraph", "train", "--train", str(data / "train.npz"),
            "--dev", str(data / "dev.npz"), "--out", str(out), "--epochs", str(epochs),
            "--num-pillars", "16", "--k-i2t", "16", "--k-t2i", "6", "--hidden", "32", "--heads", "2",
            "--batch-size", "64", "--patience", "100", "--seed", "1"]


def test_sigkill_and_resume_matches_uninterrupted(tmp_path):
    from pillargraph.data.synthetic import synthetic_splits
    train, dev, _ = synthetic_splits(200, 60, 10, seed=5)
    data = tmp_path / "data"
    train.save(data / "train.npz")
    dev.save(data / "dev.npz")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    epochs = 6
    # uninterrupted reference
    ref = subprocess.run(_train_cmd(data, tmp_path / "ref", epochs), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    # a real process, killed with SIGKILL after its first epoch is checkpointed
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(data, run, epochs), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "last.pt").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = load_checkpoint(run / "last.pt")["epoch"]
    assert interrupted_at < epochs - 1
    res = subprocess.run(_train_cmd(data, run, epochs) + ["--resume"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ref_dir = tmp_path / "ref"
    a = [json.loads(x) for x in ref_dir.joinpath("metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in run.joinpath("metrics.jsonl").read_text().splitlines()]
    assert [r["dev"] for r in a] == [r["dev"] for r in b]
    assert [r["loss_total"] for r in a] == [r["loss_total"] for r in b]
    ca, cb = load_checkpoint(ref_dir / "best.pt"), load_checkpoint(run / "best.pt")
    assert ca["fusion"] == cb["fusion"]
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def test_dev_history_lists_every_epoch_for_results_files():
    from pillargraph.train import TrainResult
    result = TrainResult(best_epoch=1, best_dev_rsum=5.0, epochs_run=2,
                         history=[{"epoch": 0, "train_time_s": 1.234, "dev": {"rsum": 4.0}},
                                  {"epoch": 1, "train_time_s": 2.06}])
    assert result.dev_history() == [{"epoch": 0, "dev_rsum": 4.0, "train_time_s": 1.2},
                                    {"epoch": 1, "dev_rsum": None, "train_time_s": 2.1}]


def test_fusion_outputs_drive_dev_selection_and_epoch_metric(tiny_splits):
    train, dev, _ = tiny_splits
    builder = tiny_builder()
    torch.manual_seed(0)
    res = Trainer(tiny_model(builder), builder, tiny_config(epochs=1)).fit(train, dev)
    record = res.history[0]["dev"]
    assert record["rsum"] == max(record["rsum_fused"], record["rsum_directions"])
    assert res.fusion["output"] in ("fused", "directions")
    assert res.fusion["dev_rsum"] == max(res.fusion["by_output"].values())
    torch.manual_seed(0)
    only = Trainer(tiny_model(builder), builder, tiny_config(epochs=1, fusion_outputs=("directions",))).fit(train, dev)
    assert only.fusion["output"] == "directions" and set(only.fusion["by_output"]) == {"directions"}
    assert only.history[0]["dev"]["rsum"] == only.history[0]["dev"]["rsum_directions"]
    assert only.history[0]["dev"]["rsum_directions"] == pytest.approx(record["rsum_directions"])
    assert TrainConfig.from_dict({"fusion_outputs": ["directions", "fused"]}).fusion_outputs == ("directions", "fused")
    with pytest.raises(ValueError, match="fusion_outputs: unknown output mode"):
        TrainConfig(fusion_outputs=("fused", "rows"))


def test_a_finished_run_reselects_its_fusion_without_building_training_graphs(tiny_splits, tmp_path, monkeypatch):
    # reusing a finished run (as benchmarks with --save-models do) costs the dev split only: on 29,000 training
    # images' lists the training graphs took longer than the fusion selection
    train, dev, _ = tiny_splits
    builder = tiny_builder()
    first = Trainer(tiny_model(builder), builder, tiny_config(epochs=1), out_dir=tmp_path).fit(train, dev)
    again = Trainer(tiny_model(builder), builder, tiny_config(epochs=1), out_dir=tmp_path)
    monkeypatch.setattr(again, "prepare", lambda split: pytest.fail("built the training graphs of a finished run"))
    result = again.fit(train, dev)
    assert result.fusion == first.fusion and result.best_dev_rsum == first.best_dev_rsum
