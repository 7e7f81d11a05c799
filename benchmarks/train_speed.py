"""Training-step and re-ranking speed on real (synthetic) query graphs.

1. Training steps per second at batch 512 with the paper's model size (hidden
   768, 24 heads, 2 layers, L = 64), through the real :class:`~pillargraph.train.Trainer`
   path (graph batches, both mirrored lists, :class:`~pillargraph.losses.PillarLoss`,
   backward, optimiser step), with the vectorised losses and, in the same run,
   with the triplet term replaced by a per-query Python loop (the research
   prototype's). Batch assembly (mirror features) is timed separately.
2. Re-ranking throughput on this machine: queries per second of
   :func:`pillargraph.rerank` on a 1000-image / 5000-caption split (graph
   building included) with the default CPU model.
3. On CUDA also: the step time eager and under ``torch.compile`` with bf16
   autocast, and inference throughput (query-candidate pairs per second) at
   the paper's size. Targets (H100): <= 20 ms per step, >= 250K pairs/s; the
   prototype needs 483 ms per step and re-scores about 168K pairs/s (on an H100).

Usage::

    python benchmarks/train_speed.py [--device cuda] [--batch 512] [--repeat 3] [--skip-rerank] [--json OUT]

Time: about 2-3 minutes on CPU with 2 cores (results/train_speed_cpu.txt: one timed step of each variant at
the paper's size took about 27 s, the re-ranking under a second; plus warm-up steps).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import description, time_it
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.io import atomic_write_text
from pillargraph.losses import PillarLoss
from pillargraph.nn import PillarReranker
from pillargraph.rerank import rerank
from pillargraph.testing import triplet_loss_reference
from pillargraph.train import TrainConfig, Trainer


class LoopTripletLoss(torch.nn.Module):
    """A :class:`PillarLoss` whose triplet term is the per-query loop reference (the prototype's)."""

    def __init__(self, loss: PillarLoss) -> None:
        super().__init__()
        self.rest = PillarLoss(**dict(loss.to_config(), triplet=0.0))
        self.weight, self.margin = loss.weights["triplet"], loss.margin

    def forward(self, i2t, t2i, *mirrors, y_i2t, y_t2i, mask_i2t=None, mask_t2i=None, **kw):
        total, parts = self.rest(i2t, t2i, *mirrors, y_i2t=y_i2t, y_t2i=y_t2i, mask_i2t=mask_i2t,
                                 mask_t2i=mask_t2i, **kw)
        for d, scores, y, mask in (("i2t", i2t, y_i2t, mask_i2t), ("t2i", t2i, y_t2i, mask_t2i)):
            term = triplet_loss_reference(scores, y, mask, margin=self.margin)
            parts[f"triplet_{d}"] = term.detach()
            total = total + self.weight * term
        parts["total"] = total.detach()
        return total, parts


@contextlib.contextmanager
def loop_triplet(trainer: Trainer):
    """Give ``trainer`` the per-query-loop triplet term for the duration (benchmark only)."""
    original = trainer.loss_fn
    trainer.loss_fn = LoopTripletLoss(original)
    try:
        yield
    finally:
        trainer.loss_fn = original


def trainer_step(trainer: Trainer, batch, amp: bool, forward=None):
    forward = forward or trainer.step_loss
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, _ = forward(batch)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    return loss


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--num-pillars", type=int, default=64)
    p.add_argument("--repeat", type=int, default=None, help="timed steps (default: 1 on CPU, 10 on CUDA)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement on CUDA")
    p.add_argument("--skip-rerank", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def paper_size_trainer(args, device: torch.device, train) -> tuple:
    """The paper-size model's trainer, its prepared data and one batch of ``args.batch`` captions."""
    builder = PillarGraphBuilder(num_pillars=args.num_pillars, device=device)
    torch.manual_seed(0)
    model = PillarReranker(builder.num_features, hidden_channels=args.hidden, heads=args.heads)
    trainer = Trainer(model, builder, TrainConfig(batch_size=args.batch, optimizer="sgd", lr=0.02),
                      device=device)
    data = trainer.prepare(train)
    gen = torch.Generator().manual_seed(0)
    captions = torch.randperm(train.num_texts, generator=gen)[:args.batch]
    return trainer, data, captions, gen


def time_steps(args, trainer: Trainer, data, captions, gen, out: dict, repeat: int):
    """Batch assembly and one training step with vectorised and with per-query-loop triplet losses."""
    cuda = trainer.device.type == "cuda"
    assemble = time_it(lambda: trainer.make_batch(data, captions, gen), repeat=max(3, repeat), device=args.device)
    batch = trainer.make_batch(data, captions, gen).to(trainer.device)
    sync = {"repeat": repeat, "warmup": 1, "device": args.device}
    vec = time_it(lambda: trainer_step(trainer, batch, cuda), **sync)
    with loop_triplet(trainer):
        loop = time_it(lambda: trainer_step(trainer, batch, cuda), **sync)
    out.update(batch_assembly_ms=assemble * 1e3, step_vectorised_ms=vec * 1e3, step_loop_triplet_ms=loop * 1e3,
               steps_per_s_vectorised=1 / vec, steps_per_s_loop_triplet=1 / loop, loop_over_vectorised=loop / vec)
    print(f"paper-size step, batch {args.batch} ({out['params'] / 1e6:.2f}M params, amp={cuda}):")
    print(f"  batch assembly (mirror features)   {assemble * 1e3:9.1f} ms")
    print(f"  vectorised losses                  {vec * 1e3:9.1f} ms   {1 / vec:7.2f} steps/s")
    print(f"  per-query-loop triplet (prototype) {loop * 1e3:9.1f} ms   {1 / loop:7.2f} steps/s   "
          f"({loop / vec:.2f}x slower)")
    return batch


def time_compiled(args, trainer: Trainer, batch, out: dict, repeat: int) -> None:
    """The step under ``torch.compile`` with bf16 autocast (CUDA)."""
    compiled = torch.compile(trainer.step_loss)
    t0 = time.perf_counter()
    trainer_step(trainer, batch, True, compiled)
    torch.cuda.synchronize()
    out["compile_s"] = time.perf_counter() - t0
    comp = time_it(lambda: trainer_step(trainer, batch, True, compiled), repeat=repeat, warmup=2,
                   device=args.device)
    out["step_compiled_ms"] = comp * 1e3
    print(f"  compiled (torch.compile, bf16)     {comp * 1e3:9.1f} ms   {1 / comp:7.2f} steps/s "
          f"(target <= 20 ms; compile {out['compile_s']:.0f} s)")


def time_inference(args, model: PillarReranker, data, out: dict, repeat: int) -> None:
    """Query-candidate pairs per second of the paper-size model on i2t lists (CUDA, bf16)."""
    model.eval()
    g = data["i2t"].graphs
    b = g[torch.arange(args.batch) % g.num_graphs].to(args.device)

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(b)
    sec = time_it(infer, repeat=repeat, device=args.device)
    pairs = args.batch * int(b.candidate_mask.sum())
    out["inference_pairs_per_s"] = pairs / sec
    print(f"  inference, i2t lists (K=32)        {sec * 1e3:9.2f} ms   {pairs / sec:,.0f} query-candidate "
          f"pairs/s (target >= 250K)")
    model.train()


def time_rerank(args, test, out: dict) -> None:
    """Queries per second of :func:`pillargraph.rerank` (graphs included) with the default model."""
    device = torch.device(args.device)
    small_builder = PillarGraphBuilder(num_pillars=32)
    torch.manual_seed(0)
    small = PillarReranker(small_builder.num_features, hidden_channels=128).to(device)
    rerank(small, test, small_builder, fusion=1.0, device=device)  # warm-up
    t0 = time.perf_counter()
    graphs = {d: small_builder.build(test, d) for d in ("i2t", "t2i")}
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    rerank(small, test, small_builder, fusion=1.0, graphs=graphs, device=device)
    t_score = time.perf_counter() - t0
    n = test.num_images + test.num_texts
    out.update(rerank_queries=n, rerank_build_s=t_build, rerank_score_s=t_score,
               rerank_queries_per_s=n / (t_build + t_score))
    print(f"re-ranking {test.num_images} images + {test.num_texts} captions (default model, hidden 128) on "
          f"{args.device}: graphs {t_build:.2f} s + scoring/write-back {t_score:.2f} s = "
          f"{n / (t_build + t_score):,.0f} queries/s")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    repeat = args.repeat or (10 if cuda else 1)
    out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch,
           "hidden": args.hidden, "heads": args.heads, "num_pillars": args.num_pillars}
    print(json.dumps(out))

    def save():
        if args.json:
            atomic_write_text(args.json, json.dumps(out, indent=2))

    train, _, test = synthetic_splits(max(1000, args.batch // 5 + 1), 200, 1000, seed=0)
    trainer, data, captions, gen = paper_size_trainer(args, device, train)
    out["params"] = sum(p.numel() for p in trainer.model.parameters())
    batch = time_steps(args, trainer, data, captions, gen, out, repeat)
    save()
    try:
        if cuda and not args.no_compile:
            time_compiled(args, trainer, batch, out, repeat)
        if cuda:
            time_inference(args, trainer.model, data, out, repeat)
    except Exception as err:  # report what was measured so far rather than nothing
        out["cuda_error"] = f"{type(err).__name__}: {err}"
        print(f"CUDA measurement failed: {out['cuda_error']}")
    save()
    if not args.skip_rerank:
        time_rerank(args, test, out)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
