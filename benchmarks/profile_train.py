"""Where the time of one ``pillargraph train`` run goes, stage by stage (CPU).

Runs what ``pillargraph train`` runs (its own parser and
:func:`pillargraph.cli.train.components`, :meth:`Trainer.fit`), with a timer
around each stage of the training path:

* ``graphs``: building the train and dev query graphs (:meth:`Trainer.prepare`,
  :meth:`PillarGraphBuilder.build`);
* ``batch``: graph batches of each step (:meth:`Trainer.make_batch` without the mirrors);
* ``mirror``: the mirrored lists of the structure-alignment loss (:meth:`PillarGraphBuilder.mirror`);
* ``to_device``: :meth:`TrainingBatch.to`;
* ``forward``, ``losses``: the four model calls and :class:`~pillargraph.losses.PillarLoss`;
* ``backward``: the rest of :meth:`Trainer.train_step` (``loss.backward()``, ``zero_grad``);
* ``optimizer``: gradient clipping and the optimiser step;
* ``dev_eval``: :meth:`Trainer.evaluate_dev` after each epoch;
* ``fusion``: the dev fusion selection after training;
* ``other``: the rest of the wall time of :meth:`Trainer.fit` (checkpoints, logs).

Every figure is seconds of wall time on this machine (``--threads`` torch
threads); ``load_s`` (reading the two files) is apart. ``batch`` excludes the
``mirror`` calls it makes. A stage that ran in another thread than the main one
(batch assembly where the trainer prefetches batches) is reported as
``NAME (background)``: it overlapped the main thread's stages, and ``other`` is
the main thread's rest. Run it with ``PYTHONPATH`` on any version of the
repository to compare versions; ``--torch-profile N`` adds a
:mod:`torch.profiler` table of the top operators of ``N`` training steps.

Time: one training run of the given settings plus reading the files: about 1 minute on the 3,000-image caption
proxy and 2 minutes on a 5,000-image synthetic split with 977df0a's defaults on 2 shared cores; 5 minutes
with the inductive recipe's priors.

Usage::

    python benchmarks/profile_train.py --train T.npz --dev D.npz [--max-steps N] [--json OUT] -- [train flags]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

if __package__ in (None, ""):  # run as a script: the repository is importable, after PYTHONPATH's trees
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import pillargraph  # before torch, as in `pillargraph train` (see pillargraph.openmp)
import torch
from pillargraph.cli.train import add_model_arguments, components
from pillargraph.data.files import load_split
from pillargraph.io import atomic_write_text
from pillargraph.train import Trainer

from benchmarks.common import description

#: Suffix of a stage timed in another thread than the main one (overlapping the main thread's stages).
BACKGROUND = " (background)"
STAGES = ("graphs", "batch", "mirror", "to_device", "forward", "losses", "backward", "optimizer",
          "dev_eval", "fusion", "other")


class StopEpoch(Exception):
    """Raised by the step counter after ``--max-steps`` steps."""


class StageClock:
    """Seconds per stage, accumulated by wrapping callables."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = defaultdict(float)
        self.calls: Dict[str, int] = defaultdict(int)

    def wrap(self, stage: str, fn: Callable, exclude: Sequence[str] = ()) -> Callable:
        """``fn`` timed into ``stage``, less the time its callees spent in the ``exclude`` stages."""
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            suffix = "" if threading.current_thread() is threading.main_thread() else BACKGROUND
            inner = [s + suffix for s in exclude]
            before = sum(self.seconds[s] for s in inner)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0 - (sum(self.seconds[s] for s in inner) - before)
                self.seconds[stage + suffix] += spent
                self.calls[stage + suffix] += 1
        return timed


def instrument(trainer: Trainer, clock: StageClock, max_steps: Optional[int]) -> None:
    """Put a timer around every stage of ``trainer``'s training path."""
    builder = trainer.builder
    builder.build = clock.wrap("graphs", builder.build)
    builder.mirror = clock.wrap("mirror", builder.mirror)
    trainer.make_batch = clock.wrap("batch", trainer.make_batch, exclude=("mirror",))
    model = trainer.model
    forward, timed_forward = model.forward, clock.wrap("forward", model.forward)
    model.forward = lambda *a, **kw: (timed_forward if model.training else forward)(*a, **kw)  # dev: in dev_eval
    trainer.loss_fn.forward = clock.wrap("losses", trainer.loss_fn.forward)
    trainer.optimizer.step = clock.wrap("optimizer", trainer.optimizer.step)
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = clock.wrap("optimizer", clip)
    step = trainer.train_step

    def counted_step(batch, lr):
        if max_steps is not None and clock.calls["backward"] >= max_steps:
            clock.calls["backward"] -= 1  # this call does not step
            raise StopEpoch
        return step(batch, lr)
    trainer.train_step = clock.wrap("backward", counted_step, exclude=("forward", "losses", "optimizer"))
    trainer.evaluate_dev = clock.wrap("dev_eval", trainer.evaluate_dev, exclude=("graphs",))
    trainer._select_fusion = clock.wrap("fusion", trainer._select_fusion, exclude=("graphs",))
    batch_to = pillargraph.train.trainer.TrainingBatch.to
    pillargraph.train.trainer.TrainingBatch.to = clock.wrap("to_device", batch_to)


def torch_profile(trainer: Trainer, data: Dict[str, Any], steps: int, rows: int) -> str:
    """:mod:`torch.profiler` table (self CPU time) of ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(data["source"].num_texts, generator=gen)
    bs = trainer.config.batch_size
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(steps):
            batch = trainer.make_batch(data, order[s * bs:(s + 1) * bs], gen).to(trainer.device)
            trainer.train_step(batch, trainer.config.lr)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--max-steps", type=int, default=None, help="stop the epoch after this many steps")
    p.add_argument("--torch-profile", type=int, default=0, metavar="N",
                   help="also profile N training steps with torch.profiler (after the run)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    add_model_arguments(p)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    train, dev = load_split(args.train), load_split(args.dev)
    load_s = time.perf_counter() - t_start
    builder, model, config = components(args)
    clock = StageClock()
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(model, builder, config, out_dir=out_dir, progress=False)
        instrument(trainer, clock, args.max_steps)
        t0 = time.perf_counter()
        try:
            result = trainer.fit(train, dev, resume=False)
            history, fusion = result.history, result.fusion
        except StopEpoch:
            history, fusion = [], None
        fit_s = time.perf_counter() - t0
    stages = {s: clock.seconds.get(s, 0.0) for s in STAGES if s != "other"}
    stages["other"] = fit_s - sum(stages.values())
    stages.update({s: v for s, v in clock.seconds.items() if s.endswith(BACKGROUND)})
    out = {"version": pillargraph.__version__, "path": str(Path(pillargraph.__file__).parent),
           "threads": torch.get_num_threads(), "train": args.train, "dev": args.dev,
           "steps": clock.calls["backward"], "load_s": load_s, "fit_s": fit_s, "stages_s": stages,
           "train_time_s": [h["train_time_s"] for h in history],
           "dev_rsum": [h.get("dev", {}).get("rsum") for h in history], "fusion": fusion,
           "load_avg": os.getloadavg()}
    print(json.dumps({k: v for k, v in out.items() if k != "stages_s"}))
    width = max(len(s) for s in stages)
    for s, v in stages.items():
        print(f"  {s:<{width}} {v:9.2f} s  {100 * v / fit_s:5.1f} %")
    if args.torch_profile:
        trainer = Trainer(model, builder, config, progress=False)
        out["torch_profile"] = torch_profile(trainer, trainer.prepare(train), args.torch_profile, 30)
        print(out["torch_profile"])
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
