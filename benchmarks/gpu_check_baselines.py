"""CUDA check of the bank/transductive re-rankers: CPU == CUDA on a small problem, then
time and peak GPU memory (inputs included) on a 5000 x 25000 problem with a 5000 / 25000 bank.

    python benchmarks/gpu_check_baselines.py

Time: needs a CUDA device (it does not run on the 2-core CPU machine); about a minute on one GPU (estimated;
not recorded).
"""
import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph import SimilarityBundle
from pillargraph.baselines import QueryBank, get_reranker

from benchmarks.common import description

METHODS = ["krnn", "inverted_softmax", "qb_norm", "dual_softmax", "nnn", "dbnorm"]


def problem(n, m, bi, bt, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = SimilarityBundle(sim_i2t=torch.rand(n, m, generator=g),
                         txt2img=torch.arange(n).repeat_interleave(m // n))
    bank = QueryBank(bank_i2t=torch.rand(bi, m, generator=g), bank_t2i=torch.rand(bt, n, generator=g))
    return b.to(device), bank.to(device)


def main():
    print(torch.__version__, torch.cuda.get_device_name(0))
    b, bank = problem(200, 1000, 300, 1000, "cpu")
    for name in METHODS:
        m = get_reranker(name, **({"k": 64} if name == "nnn" else {}))
        cpu = m(b, bank=bank)
        gpu = m(b, bank=bank, device="cuda")
        for d in cpu:
            torch.testing.assert_close(gpu[d].cpu(), cpu[d], rtol=1e-4, atol=1e-4)
    print("small problem: CPU == CUDA for", METHODS)
    b, bank = problem(5000, 25000, 5000, 25000, "cuda")
    torch.cuda.synchronize()
    for name in METHODS:
        torch.cuda.reset_peak_memory_stats()
        m = get_reranker(name)
        t = time.perf_counter()
        out = m(b, bank=bank)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name:18s} {dt:7.2f} s   peak GPU memory {peak:5.2f} GiB (inputs 1.5 GiB + outputs 1 GiB included)")
        del out


if __name__ == "__main__":
    argparse.ArgumentParser(description=description(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
