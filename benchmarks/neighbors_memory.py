"""Time and peak memory of building top-k neighbour lists for a large split.

Builds :class:`pillargraph.data.neighbors.NeighborLists` (all four kinds, k = 100 by
default) for a 20,000-image / 100,000-caption split, the size at which dense
matrices no longer fit (``sim_t2t`` alone would be 40 GB in float32), and prints the
wall time and the peak resident memory of this process (target: under 8 GiB). The
embeddings come from :mod:`pillargraph.data.synthetic` when it is available, otherwise
from a random low-rank model (captions are noisy copies of their image's latent
vector, intra-modal embeddings use their own projections). A sample of rows is checked
against an exact dense top-k of those rows.

Run: python benchmarks/neighbors_memory.py [--images 20000] [--k 100] [--backend auto]

Time: about a minute at the defaults on 2 cores (results/graph_build.txt built the same 20,000-image, k = 100
lists in 47 s), plus drawing the embeddings.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import resource
import time

import torch

from pillargraph.data.neighbors import NeighborLists, faiss_available
from pillargraph.data.source import KINDS

from benchmarks.common import description, peak_rss_gib


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2 ** 30


def random_embeddings(n: int, cpi: int, dim: int, rank: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    m = n * cpi
    txt2img = torch.arange(m) // cpi
    z = torch.randn(n, rank, generator=g)
    zt = z[txt2img] + 0.7 * torch.randn(m, rank, generator=g)

    def encode(latent, noise):
        w = torch.randn(rank, dim, generator=g) / rank ** 0.5
        return latent @ w + noise * torch.randn(latent.shape[0], dim, generator=g)

    return (encode(z, 0.3), encode(zt, 0.3), encode(z, 0.5), encode(zt, 0.5), txt2img)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=description(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--dim", type=int, default=256, help="embedding size (random source)")
    parser.add_argument("--rank", type=int, default=64, help="latent rank (random source)")
    parser.add_argument("--source", choices=("auto", "synthetic", "random"), default="auto")
    parser.add_argument("--backend", choices=("auto", "torch", "faiss"), default="auto")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--check-rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def make_split(args: argparse.Namespace):
    """The split's embeddings ``(source, img, txt, img_in, txt_in, txt2img)`` and the seconds it took."""
    source = args.source
    if source == "auto":
        try:
            import pillargraph.data.synthetic  # noqa: F401
            source = "synthetic"
        except ImportError:
            source = "random"
    t0 = time.perf_counter()
    if source == "synthetic":
        from pillargraph.data.synthetic import synthetic_embeddings
        split = synthetic_embeddings(args.images, args.captions_per_image, seed=args.seed)
        img, txt = split.img_emb, split.txt_emb
        img_in, txt_in, txt2img = split.img_intra_emb, split.txt_intra_emb, split.txt2img
    else:
        img, txt, img_in, txt_in, txt2img = random_embeddings(
            args.images, args.captions_per_image, args.dim, args.rank, args.seed)
    t_data = time.perf_counter() - t0
    return (source, img, txt, img_in, txt_in, txt2img), t_data


def check_lists(lists: NeighborLists, img, txt, img_in, txt_in, check_rows: int) -> None:
    """Compare a sample of rows of every kind with an exact dense top-k of those rows."""
    g = torch.Generator().manual_seed(1)
    emb = dict(i2t=(img, txt), t2i=(txt, img), i2i=(img_in, img_in), t2t=(txt_in, txt_in))
    for kind in KINDS:
        q, gal = (torch.nn.functional.normalize(e.float(), dim=1) for e in emb[kind])
        rows = torch.randint(0, q.shape[0], (check_rows,), generator=g)
        exact = torch.topk(q[rows] @ gal.T, lists.depth(kind), dim=1)
        idx, val = lists.topk(kind, lists.depth(kind), rows)
        same = (idx == exact.indices).float().mean().item()
        err = (val - exact.values).abs().max().item()
        print(f"check {kind} on {check_rows} rows: {same:.2%} identical indices "
              f"(float32 near-ties may swap), max score error {err:.1e}")


def main() -> None:
    args = build_parser().parse_args()
    (source, img, txt, img_in, txt_in, txt2img), t_data = make_split(args)
    emb_gib = sum(e.numel() * e.element_size() for e in (img, txt, img_in, txt_in)) / 2 ** 30
    backend = args.backend
    if backend == "auto":
        backend = "auto (faiss)" if faiss_available() and img.dtype == torch.float32 else "auto (torch)"
    print(f"split: {img.shape[0]} images x {txt.shape[0]} captions from {source} embeddings "
          f"(cross-modal d={img.shape[1]}, intra d={img_in.shape[1]}/{txt_in.shape[1]}, "
          f"{emb_gib:.2f} GiB) made in {t_data:.1f} s; k={args.k}, backend {backend}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"memory before the search: current {current_rss_gib():.2f} GiB, peak {peak_rss_gib():.2f} GiB")

    t0, c0 = time.perf_counter(), cpu_seconds()
    lists = NeighborLists.from_embeddings(img, txt, txt2img, k=args.k, img_intra_emb=img_in,
                                          txt_intra_emb=txt_in, chunk_size=args.chunk_size,
                                          backend=args.backend)
    t_build, c_build = time.perf_counter() - t0, cpu_seconds() - c0
    list_gib = sum(t.numel() * t.element_size() for kind in KINDS for t in lists.lists(kind)) / 2 ** 30
    peak = peak_rss_gib()
    print(f"built {lists!r} in {t_build:.1f} s wall, {c_build:.1f} s CPU (a loaded machine "
          f"inflates the wall time); the lists take {list_gib:.2f} GiB")
    print(f"peak RSS: {peak:.2f} GiB (target < 8 GiB) -> {'OK' if peak < 8 else 'OVER TARGET'}")

    check_lists(lists, img, txt, img_in, txt_in, args.check_rows)


if __name__ == "__main__":
    main()
