"""``pillargraph neighbors INPUT.npz --k K --out LISTS.npz``: top-k neighbour lists for large splits.

``INPUT.npz`` is an embeddings file (``img_emb``, ``txt_emb``, ``txt2img``;
optionally ``img_intra_emb`` / ``txt_intra_emb`` from unimodal encoders) or a
dense bundle. From embeddings, the scores are cosine similarities of the
L2-normalised embeddings (:func:`~pillargraph.data.topk_neighbors`). The lists
are written in the format :meth:`NeighborLists.save` writes, which ``train``,
``rerank`` and ``evaluate`` accept in place of a bundle.

With ``--episode-images N`` the images are cut into the training episodes of
:func:`~pillargraph.data.partition.episode_partition` (what ``pillargraph train``
cuts for the same sizes and seed) and each row is searched within its own
episode, so the lists are those of each episode alone.

With ``--shard I/N`` (or ``--shard torchrun``) only shard ``I`` of each kind's
query rows is searched and a part file is written; ``pillargraph merge``
assembles the ``N`` parts into the unsharded output
(:mod:`pillargraph.data.list_shards`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..bundle import SimilarityBundle
from ..data.files import load_embeddings, npz_format
from ..data.list_shards import neighbor_shard
from ..data.neighbors import BACKENDS, NeighborLists, check_embeddings, faiss_available
from ..device import resolve_device
from ..io import removed_on_failure
from ..shard import file_fingerprint
from ..data.partition import episode_partition
from . import CLIError
from .checks import check_out
from .rerank import shard_out
from .train import parse_episode_images

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    shard, args.out = shard_out(args.shard, args.out)
    out = Path(args.out)
    check_out(out, args.force, [("", args.input)])
    if args.k < 1:
        raise CLIError(f"--k: must be positive, got {args.k}")
    device = resolve_device(args.device)
    sizes = parse_episode_images(args.episode_images)
    if sizes and shard is not None:
        raise CLIError("--episode-images: not with --shard (episodes are small: search them whole)")
    progress = not args.quiet and sys.stderr.isatty() or args.progress
    with removed_on_failure(out.parent):  # checked before the search; a folder made here goes if it fails
        if shard is not None:
            return write_shard(args, shard, device, progress)
        return write_lists(args, out, device, progress, sizes)


def read_embeddings(path: str) -> Dict[str, Any]:
    """The arrays of an embeddings file, all checked before any search (whichever rows a shard
    holds); a bad one is named with the file."""
    arrays = load_embeddings(path)
    try:
        return check_embeddings(**arrays)
    except ValueError as err:
        raise CLIError(f"{path}: {err}") from None


def write_lists(args: argparse.Namespace, out: Path, device, progress: bool,
                sizes: Optional[Tuple[int, ...]] = None) -> int:
    """The whole search: write the neighbour lists of an embeddings file (within episodes of ``sizes``
    images, if any) or a dense bundle."""
    t0 = time.perf_counter()
    if npz_format(args.input) == "embeddings":
        e = read_embeddings(args.input)
        episodes = episode_partition(e["img_emb"].shape[0], sizes, args.episode_seed) if sizes else None
        lists = NeighborLists.from_embeddings(
            e["img_emb"], e["txt_emb"], e["txt2img"], args.k, e["img_intra_emb"], e["txt_intra_emb"],
            keep_embeddings=not args.no_embeddings, chunk_size=args.chunk_size, backend=args.backend,
            device=device, progress=progress, episodes=episodes)
        source = "embeddings" + (f", within episodes of {args.episode_images} images" if sizes else "")
    else:
        if sizes:
            raise CLIError("--episode-images: needs an embeddings file; `pillargraph train` cuts a dense bundle "
                           "into episodes itself")
        if args.backend == "faiss":
            raise CLIError("--backend faiss: searches embeddings; a dense bundle is ranked with torch")
        lists = NeighborLists.from_bundle(SimilarityBundle.load(args.input), args.k,
                                          chunk_size=args.chunk_size, device=device)
        source = "dense bundle"
    lists.save(out)
    backend = args.backend if args.backend != "auto" else ("faiss" if faiss_available() else "torch")
    print(f"{lists!r} from the {source} in {time.perf_counter() - t0:.1f}s "
          f"(backend {backend if source == 'embeddings' else 'torch'}); wrote {out}")
    return 0


def write_shard(args: argparse.Namespace, shard: Tuple[int, int], device, progress: bool) -> int:
    """``--shard I/N``: search shard ``I`` of ``N`` of the query rows and write its part for ``merge``."""
    if npz_format(args.input) != "embeddings":
        raise CLIError(f"--shard: needs an embeddings file (img_emb, txt_emb, txt2img), and {args.input} is not "
                       f"one; a dense bundle's lists are built whole")
    t0 = time.perf_counter()
    e = read_embeddings(args.input)
    part = neighbor_shard(e["img_emb"], e["txt_emb"], e["txt2img"], args.k, e["img_intra_emb"], e["txt_intra_emb"],
                          index=shard[0], count=shard[1], keep_embeddings=not args.no_embeddings,
                          chunk_size=args.chunk_size, backend=args.backend, device=device, progress=progress,
                          inputs={"embeddings": file_fingerprint(args.input)},
                          input_path=str(Path(args.input).resolve()))
    part.save(args.out)
    (a, b), (c, d) = part.ranges()["i2t"], part.ranges()["t2i"]
    backends = "/".join(sorted(set(part.backends.values())))
    print(f"shard {part.index}/{part.count}: image rows [{a}, {b}) of {part.num_images}, caption rows [{c}, {d}) "
          f"of {part.num_texts} (k {part.k}, backend {backends}) in "
          f"{time.perf_counter() - t0:.1f}s; wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("neighbors", help="top-k neighbour lists from embeddings or a bundle",
                       description="Compute top-k neighbour lists (i2t, t2i, i2i, t2t) in chunks, for "
                                   "splits whose dense matrices do not fit in memory. From embeddings, the "
                                   "scores are cosine similarities: both sides are L2-normalised, so the "
                                   "embeddings' lengths play no part; a dense bundle's lists keep its own "
                                   "scores.")
    p.add_argument("input", help="embeddings .npz (img_emb, txt_emb, txt2img[, img_intra_emb, txt_intra_emb]) "
                                 "or a dense bundle .npz")
    p.add_argument("--k", type=int, default=100, help="neighbours per row and kind (default: 100); scores are "
                                                      "cosine similarities of the L2-normalised embeddings")
    p.add_argument("--episode-images", default=None, metavar="N[,N...]",
                   help="search each row within its training episode of N images (several sizes are cycled), as "
                        "`pillargraph train --episode-images` cuts them; see `pillargraph train --help` for each "
                        "recipe's sizes (default: the whole split)")
    p.add_argument("--episode-seed", type=int, default=0, help="seed of the episode partition (default: 0)")
    p.add_argument("--out", required=True, help="output .npz (NeighborLists format); with --shard, the shard's "
                                                "part file")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="search only shard I (from 1) of N of each kind's query rows (embeddings input) and "
                        "write a part file; `pillargraph merge` assembles the N parts into the unsharded lists; "
                        "'torchrun' takes I/N from RANK and WORLD_SIZE; a {shard} in --out becomes I (needed under "
                        "torchrun)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="top-k search: FAISS when installed (auto), or chunked torch")
    p.add_argument("--chunk-size", type=int, default=None, help="query rows per block")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cpu)")
    p.add_argument("--no-embeddings", action="store_true",
                   help="do not keep the embeddings (smaller file; pair similarities then come from the lists)")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
