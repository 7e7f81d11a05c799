"""pillargraph.train.distributed: 2 gloo processes on the CPU train like one process."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pillargraph.train import Trainer
from pillargraph.train.distributed import (DistributedContext, DistributedTrainer, check_batches, init_from_env,
                                           local_batch, local_range, shutdown)

from ..helpers.tiny import tiny_builder, tiny_config, tiny_model, tiny_splits

ITEMS = 63  # an odd global batch: the two shares differ in size


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_step(trainer, train):
    """One optimiser step on the first ITEMS training items, as Trainer.fit makes it."""
    data = trainer.prepare(train)
    gen = torch.Generator().manual_seed(11)
    batch = trainer.make_batch(data, torch.randperm(train.num_texts, generator=gen)[:ITEMS], gen)
    trainer.model.train()
    loss, _ = trainer.step_loss(batch)
    trainer.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
    trainer.optimizer.step()
    return float(loss.detach())


def make(cls, **kw):
    builder = tiny_builder()
    return cls(tiny_model(builder, seed=0, dropout=0.0), builder, tiny_config(batch_size=ITEMS), **kw)


def step_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    try:
        trainer = make(DistributedTrainer, context=ctx)
        loss = one_step(trainer, tiny_splits()[0])
        torch.save({"loss": loss, "model": trainer.model.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        shutdown(ctx)


def test_two_processes_make_the_single_process_step(tmp_path):
    mp.spawn(step_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = make(Trainer)
    loss = one_step(single, tiny_splits()[0])
    want = single.model.state_dict()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(loss, abs=1e-6)
        for name, value in want.items():
            torch.testing.assert_close(got["model"][name], value, atol=1e-5, rtol=0, msg=name)
    start = make(Trainer).model.state_dict()
    moved = max(float((want[k] - start[k]).abs().max()) for k in want)
    assert moved > 1e-4  # the step changed the weights, so the comparison means something


def test_one_process_trainer_is_the_plain_trainer():
    a, b = make(Trainer), make(DistributedTrainer)
    assert b.scorer is None and b.context == DistributedContext()
    train = tiny_splits()[0]
    assert one_step(a, train) == one_step(b, train)
    for name, value in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[name], value)


def test_shares_and_batches():
    for n, w in ((63, 2), (5, 5), (100, 3), (7, 4)):
        ranges = [local_range(n, r, w) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    check_batches(300, 64, 2)
    with pytest.raises(ValueError, match="batch of 1 training items"):
        check_batches(129, 64, 2)
    with pytest.raises(ValueError, match="batch of 2 training items"):
        check_batches(2, 64, 4)


def test_local_batch_splits_every_graph_batch():
    trainer = make(Trainer)
    train = tiny_splits()[0]
    batch = trainer.make_batch(trainer.prepare(train), torch.arange(9), torch.Generator().manual_seed(0))
    parts = [local_batch(batch, r, 2) for r in (0, 1)]
    for name in ("i2t", "t2i", "mirror_t2i", "mirror_i2t"):
        whole = getattr(batch, name)
        assert torch.equal(torch.cat([getattr(p, name).x for p in parts]), whole.x)
        assert torch.equal(torch.cat([getattr(p, name).node_index for p in parts]), whole.node_index)


def test_environment_is_checked():
    assert init_from_env(env={}) == DistributedContext()
    assert init_from_env(env={"WORLD_SIZE": "1", "RANK": "0"}) == DistributedContext()
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        init_from_env(env={"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="RANK: expected 0 <= RANK < WORLD_SIZE"):
        init_from_env(env={"WORLD_SIZE": "2", "RANK": "2"})


ARGS = ["--num-pillars", "8", "--k-i2t", "8", "--k-t2i", "4", "--overlap-neighbors", "4", "--hidden", "16",
        "--heads", "2", "--epochs", "2", "--batch-size", "64", "--dropout", "0"]


def test_torchrun_two_processes_train_like_one(tmp_path):
    """``torchrun --nproc-per-node 2 -m pillargraph train``: one run folder, a loadable checkpoint
    with the single process's weights, the same selected epoch and fusion weights."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from pillargraph.cli import main
    from pillargraph.train import load_checkpoint, model_from_checkpoint

    train, dev, _ = tiny_splits()
    train.save(tmp_path / "train.npz")
    dev.save(tmp_path / "dev.npz")
    common = ["train", "--train", str(tmp_path / "train.npz"), "--dev", str(tmp_path / "dev.npz"), *ARGS]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pillargraph", *common, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])  # rank 0 alone prints it
    assert done.stdout.count('"best_epoch"') == 1
    one, two = load_checkpoint(tmp_path / "one" / "best.pt"), load_checkpoint(tmp_path / "two" / "best.pt")
    assert summary["best_epoch"] == one["best"]["epoch"] == two["best"]["epoch"]
    assert two["fusion"] == one["fusion"] and two["epoch"] == one["epoch"]
    model_from_checkpoint(tmp_path / "two" / "best.pt")
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, atol=1e-4, rtol=0, msg=name)
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 2
