import os
import pytest
import torch
import torch.multiprocessing as mp
from pillargraph.train import Trainer
from pillargraph.train.distributed import DistributedTrainer, init_from_env, shutdown
from ..helpers.tiny import tiny_builder, tiny_config, tiny_model, tiny_splits
from .test_distributed import free_port


class Stop(Exception):
    pass


def make(cls, out, **kw):
    b = tiny_builder()
    return cls(tiny_model(b, seed=0, dropout=0.0), b, tiny_config(epochs=3, batch_size=64), out_dir=out, **kw)


def worker(rank, port, out, whole):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    train, dev, _ = tiny_splits()
    def stop(rec):
        if rec["epoch"] == 0:
            raise Stop
    try:
        make(DistributedTrainer, out, context=ctx).fit(train, dev, on_epoch_end=stop)
    except Stop:
        pass
    make(DistributedTrainer, out, context=ctx).fit(train, dev, resume=True)
    # the same run without the interruption, in another folder
    make(DistributedTrainer, whole, context=ctx).fit(train, dev)
    shutdown(ctx)


def test_resume_under_two_processes(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path / "two"), str(tmp_path / "whole")), nprocs=2, join=True)
    train, dev, _ = tiny_splits()
    make(Trainer, tmp_path / "one").fit(train, dev)
    a = torch.load(tmp_path / "one" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "best.pt", weights_only=True)
    whole = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    # the same choices as one process (weights differ there by the all-reduce's float rounding, ~1e-4
    # after three epochs) ...
    assert a["best"] == pytest.approx(b["best"]) and a["fusion"] == b["fusion"]
    # ... and the very weights of the uninterrupted two-process run: resuming changes nothing
    assert whole["best"] == b["best"] and whole["fusion"] == b["fusion"]
    for k, v in whole["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-6, rtol=0)
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 3
