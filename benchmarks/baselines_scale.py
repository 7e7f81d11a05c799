"""Run time and peak memory of the training-free re-rankers on a large synthetic problem.

    python benchmarks/baselines_scale.py --images 5000 --per 5 --device cuda

Prints one line per method: seconds for both directions, peak extra memory
(CUDA: allocator peak beyond the bundle; CPU: process max RSS) and rSum
against the base. Embeddings are random clusters, so the numbers say nothing
about accuracy on real data.

Time: about a minute at the defaults (1,000 images x 5 captions, CPU) on 2 cores (estimated; not recorded);
the time grows with the square of --images.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time

import torch

from pillargraph import SimilarityBundle
from pillargraph.baselines import available_rerankers, evaluate_rescored, get_reranker

from benchmarks.common import description, peak_rss_gib


def main() -> None:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--per", type=int, default=5, help="captions per image")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", nargs="*", default=None, help="default: all registered")
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    img = torch.randn(args.images, args.dim, generator=g)
    t2i = torch.arange(args.images).repeat_interleave(args.per)
    txt = img[t2i] + 2.0 * torch.randn(len(t2i), args.dim, generator=g)
    bundle = SimilarityBundle.from_embeddings(img.to(args.device), txt.to(args.device),
                                              t2i.to(args.device))
    base = evaluate_rescored({}, bundle)["rsum"]
    print(f"{args.images} images x {len(t2i)} captions on {args.device}: base rSum {base:.1f}")
    cuda = args.device.startswith("cuda")
    for name in args.methods or list(available_rerankers()):
        m = get_reranker(name)
        if m.needs_bank:
            print(f"{name:14s} skipped (needs a query bank)")
            continue
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = m(bundle)
        if cuda:
            torch.cuda.synchronize()
        sec = time.perf_counter() - t
        if cuda:
            mem = (torch.cuda.max_memory_allocated() - before) / 2**30
            where = "GiB peak beyond the bundle"
        else:
            mem = peak_rss_gib()
            where = "GiB process max RSS"
        rsum = evaluate_rescored(out, bundle)["rsum"]
        print(f"{name:14s} {sec:8.1f} s {mem:6.2f} {where}  rSum {rsum:.1f} ({rsum - base:+.1f})",
              flush=True)
        del out


if __name__ == "__main__":
    main()
