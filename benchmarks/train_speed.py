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
   prototype needs 483 ms per step and re-scores about 168K pairs/s.

Usage::

    python benchmarks/train_speed.py [--device cuda] [--batch 512] [--repeat 3] [--skip-rerank] [--json OUT]
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

import pillargraph.losses.pillar_loss as pillar_loss_module
from benchmarks.common import time_it
from pillargraph.testing import triplet_loss_reference
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.nn import PillarReranker
from pillargraph.rerank import rerank
from pillargraph.train import TrainConfig, Trainer


@contextlib.contextmanager
def loop_triplet():
    """Swap PillarLoss's triplet term for the per-query loop reference (benchmark only)."""
    original = pillar_loss_module.triplet_loss
    pillar_loss_module.triplet_loss = triplet_loss_reference
    try:
        yield
    finally:
        pillar_loss_module.triplet_loss = original


def trainer_step(trainer: Trainer, batch, amp: bool, forward=None):
    forward = forward or trainer.step_loss
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, _ = forward(batch)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    return loss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--num-pillars", type=int, default=64)
    p.add_argument("--repeat", type=int, default=None, help="timed steps (default: 1 on CPU, 10 on CUDA)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement on CUDA")
    p.add_argument("--skip-rerank", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    repeat = args.repeat or (10 if cuda else 1)
    out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch,
           "hidden": args.hidden, "heads": args.heads, "num_pillars": args.num_pillars}
    print(json.dumps(out))

    train, dev, test = synthetic_splits(max(1000, args.batch // 5 + 1), 200, 1000, seed=0)
    builder = PillarGraphBuilder(num_pillars=args.num_pillars, device=device)
    torch.manual_seed(0)
    model = PillarReranker(builder.num_features, hidden_channels=args.hidden, heads=args.heads)
    out["params"] = sum(p.numel() for p in model.parameters())
    trainer = Trainer(model, builder, TrainConfig(batch_size=args.batch, optimizer="sgd", lr=0.02),
                      device=device)
    data = trainer.prepare(train)
    gen = torch.Generator().manual_seed(0)
    captions = torch.randperm(train.num_texts, generator=gen)[:args.batch]
    assemble = time_it(lambda: trainer.make_batch(data, captions, gen), repeat=max(3, repeat), device=args.device)
    batch = trainer.make_batch(data, captions, gen).to(device)
    amp = cuda
    sync = {"repeat": repeat, "warmup": 1, "device": args.device}
    vec = time_it(lambda: trainer_step(trainer, batch, amp), **sync)
    with loop_triplet():
        loop = time_it(lambda: trainer_step(trainer, batch, amp), **sync)
    out.update(batch_assembly_ms=assemble * 1e3, step_vectorised_ms=vec * 1e3, step_loop_triplet_ms=loop * 1e3,
               steps_per_s_vectorised=1 / vec, steps_per_s_loop_triplet=1 / loop, loop_over_vectorised=loop / vec)
    print(f"paper-size step, batch {args.batch} ({out['params'] / 1e6:.2f}M params, amp={amp}):")
    print(f"  batch assembly (mirror features)   {assemble * 1e3:9.1f} ms")
    print(f"  vectorised losses                  {vec * 1e3:9.1f} ms   {1 / vec:7.2f} steps/s")
    print(f"  per-query-loop triplet (prototype) {loop * 1e3:9.1f} ms   {1 / loop:7.2f} steps/s   "
          f"({loop / vec:.2f}x slower)")

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    save()
    try:
        if cuda and not args.no_compile:
            compiled = torch.compile(trainer.step_loss)
            t0 = time.perf_counter()
            trainer_step(trainer, batch, amp, compiled)
            torch.cuda.synchronize()
            out["compile_s"] = time.perf_counter() - t0
            comp = time_it(lambda: trainer_step(trainer, batch, amp, compiled), repeat=repeat, warmup=2,
                           device=args.device)
            out["step_compiled_ms"] = comp * 1e3
            print(f"  compiled (torch.compile, bf16)     {comp * 1e3:9.1f} ms   {1 / comp:7.2f} steps/s "
                  f"(target <= 20 ms; compile {out['compile_s']:.0f} s)")

        if cuda:
            model.eval()
            g = data["i2t"].graphs
            b = g[torch.arange(args.batch) % g.num_graphs].to(device)

            def infer():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return model(b)
            sec = time_it(infer, repeat=repeat, device=args.device)
            pairs = args.batch * int(b.candidate_mask.sum())
            out["inference_pairs_per_s"] = pairs / sec
            print(f"  inference, i2t lists (K=32)        {sec * 1e3:9.2f} ms   {pairs / sec:,.0f} query-candidate "
                  f"pairs/s (target >= 250K)")
            model.train()
    except Exception as err:  # report what was measured so far rather than nothing
        out["cuda_error"] = f"{type(err).__name__}: {err}"
        print(f"CUDA measurement failed: {out['cuda_error']}")
    save()

    if not args.skip_rerank:
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
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
