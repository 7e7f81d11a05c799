"""Time and peak memory of the synthetic generator.

Prints, for a 1000-image split, the time to draw the embeddings and to build
the dense bundle, and for a 20,000-image / 100,000-caption split the time and
the traced peak memory of drawing the embeddings, next to the size a dense
float32 ``sim_i2t`` alone would need.

    python benchmarks/synthetic_speed.py

Time: under a minute on 2 cores (estimated: a 1,000-image and a 20,000-image synthetic split; not recorded).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
import tracemalloc

from pillargraph.data import synthetic_embeddings

from benchmarks.common import description


def main() -> None:
    synthetic_embeddings(10)  # warm-up (imports, BLAS threads)
    t0 = time.perf_counter()
    split = synthetic_embeddings(1000, 5, seed=0)
    t1 = time.perf_counter()
    split.to_bundle()
    t2 = time.perf_counter()
    print(f"1000 images x 5 captions: embeddings {t1 - t0:.3f} s, dense bundle {t2 - t1:.3f} s")

    tracemalloc.start()
    t0 = time.perf_counter()
    big = synthetic_embeddings(20_000, 5, seed=0, split="train")
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dense = big.num_images * big.num_texts * 4
    print(f"{big.num_images} images x {big.num_texts} captions as embeddings: {elapsed:.2f} s, "
          f"peak {peak / 2**20:.0f} MiB (a dense float32 sim_i2t alone: {dense / 2**30:.1f} GiB)")


if __name__ == "__main__":
    argparse.ArgumentParser(description=description(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
