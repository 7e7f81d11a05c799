"""Speed of :func:`pillargraph.metrics.evaluate` against a plain per-query reference.

Scores a 5000-image x 25000-caption matrix (5 captions per image; Gaussian scores with
the positives shifted up, so ranks are realistic and ties have probability zero). The
reference is the classic per-query loop (argsort each image's row / each caption's column
and find the positive). Looping over all 30,000 queries would take minutes, so the
reference runs on a random sample of queries and its time is extrapolated linearly to all
of them; the printout says so. Both give identical ranks on the sample (checked).

Run: python benchmarks/metrics_speed.py [--images 5000] [--sample 0.1]

Time: about a minute at the defaults on 2 cores (estimated: 3 repeats of the vectorised metrics on 5,000 x
25,000 and a 10% sample of the per-query loop; not recorded).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time

import numpy as np
import torch

from pillargraph.metrics import evaluate, i2t_ranks, t2i_ranks

from benchmarks.common import description


def reference_i2t_rank(sim: np.ndarray, txt2img: np.ndarray, image: int) -> int:
    order = np.argsort(sim[image])[::-1]
    positions = np.nonzero(txt2img[order] == image)[0]
    return int(positions.min()) + 1


def reference_t2i_rank(sim: np.ndarray, txt2img: np.ndarray, caption: int) -> int:
    order = np.argsort(sim[:, caption])[::-1]
    return int(np.nonzero(order == txt2img[caption])[0][0]) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--sample", type=float, default=0.1, help="fraction of queries the reference runs")
    parser.add_argument("--signal", type=float, default=4.0, help="shift of the positive scores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n, cpi = args.images, args.captions_per_image
    m = n * cpi
    g = torch.Generator().manual_seed(args.seed)
    txt2img = torch.arange(m) // cpi
    sim = torch.randn(n, m, generator=g)
    sim[txt2img, torch.arange(m)] += args.signal
    print(f"matrix {n} x {m} float32, {cpi} captions per image, torch threads {torch.get_num_threads()}")

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = evaluate(sim, txt2img)
        times.append(time.perf_counter() - t0)
    t_fast = float(np.median(times))
    print(f"evaluate: {t_fast:.2f} s (median of {args.repeats}); i2t R@1 {result['i2t_r1']:.1f}, "
          f"t2i R@1 {result['t2i_r1']:.1f}, rsum {result['rsum']:.1f}")

    rng = np.random.default_rng(args.seed)
    img_sample = rng.choice(n, size=max(1, int(n * args.sample)), replace=False)
    cap_sample = rng.choice(m, size=max(1, int(m * args.sample)), replace=False)
    s_np, t_np = sim.numpy(), txt2img.numpy()
    t0 = time.perf_counter()
    ref_i2t = np.array([reference_i2t_rank(s_np, t_np, i) for i in img_sample])
    t_i2t = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_t2i = np.array([reference_t2i_rank(s_np, t_np, j) for j in cap_sample])
    t_t2i = time.perf_counter() - t0
    t_ref = t_i2t / len(img_sample) * n + t_t2i / len(cap_sample) * m
    print(f"per-query reference: {t_i2t:.2f} s for {len(img_sample)} image queries + {t_t2i:.2f} s for "
          f"{len(cap_sample)} caption queries ({args.sample:.0%} sample), "
          f"extrapolated to all {n + m} queries: {t_ref:.1f} s")

    same_i2t = np.array_equal(i2t_ranks(sim, txt2img).numpy()[img_sample], ref_i2t)
    same_t2i = np.array_equal(t2i_ranks(sim, txt2img).numpy()[cap_sample], ref_t2i)
    print(f"identical ranks on the sample: i2t {same_i2t}, t2i {same_t2i}")
    ratio = t_ref / t_fast
    print(f"speed-up: {ratio:.0f}x (target >= 20x) -> {'OK' if ratio >= 20 else 'BELOW TARGET'}")
    if not (same_i2t and same_t2i):
        raise SystemExit("ranks differ from the reference")


if __name__ == "__main__":
    main()
