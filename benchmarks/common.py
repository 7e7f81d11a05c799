"""Helpers shared by the benchmark scripts: progress lines, peak memory, random query-graph batches, a timer,
the learned re-ranker's named settings."""
from __future__ import annotations

import os
import resource
import shlex
import sys
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from pillargraph.data import caption_proxy_embeddings
from pillargraph.graphs import IMAGE, TEXT, GraphBatch

__all__ = ["log", "peak_rss_gib", "command_line", "proxy_train_dev", "random_graph_batch", "mirrored", "time_it", "VARIANTS", "variant"]


def log(msg: str) -> None:
    """One timestamped progress line on stdout; tagged with the rank under torchrun with several processes."""
    rank = os.environ.get("RANK")
    tag = f" rank {rank}" if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    print(f"[{time.strftime('%H:%M:%S')}{tag}] {msg}", flush=True)


def peak_rss_gib(who: str = "self") -> float:
    """Peak resident memory so far in GiB: of this process (``'self'``) or of the largest child process it
    has waited for (``'children'``). Linux reports ``ru_maxrss`` in KiB."""
    scope = {"self": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    if who not in scope:
        raise ValueError(f"who: expected 'self' or 'children', got {who!r}")
    return resource.getrusage(scope[who]).ru_maxrss / 2 ** 20


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The shell-quoted command that ran ``script`` (``'benchmarks/NAME.py'``) with ``argv`` (default: this
    process's arguments), as results files record it."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + " ".join(shlex.quote(a) for a in [script, *args])


def proxy_train_dev(combo: str, train_images: int, episode_images: int, lists_k: int = 100):
    """The Flickr30K-train caption proxy cut to its first ``train_images`` images, as dense episodes of
    ``episode_images`` images (``0``: one split of top-``lists_k`` neighbour lists), and the Flickr30K dev
    bundle, both for ``combo`` (``'CROSS:INTRA'`` encoders)."""
    cross, intra = combo.split(":")
    t0 = time.perf_counter()
    emb = caption_proxy_embeddings("f30k_train", cross, intra)
    if train_images < emb.num_images:
        emb = emb.subset(torch.arange(train_images))
    train = emb.episodes(episode_images) if episode_images else emb.lists(lists_k)
    dev = caption_proxy_embeddings("f30k_dev", cross, intra).bundle()
    log(f"data {combo}: train {train!r}, dev {dev.num_images}x{dev.num_texts}, "
        f"{time.perf_counter() - t0:.0f}s, peak RSS {peak_rss_gib():.1f} GiB")
    return train, dev


def random_graph_batch(direction: str, b: int, k: int, f: int, density: float = 0.3,
                       device: str = "cpu", seed: int = 0) -> GraphBatch:
    """Random features and a random row-stochastic adjacency with self loops (the builder's output shape)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, k, f, generator=g)
    raw = torch.rand(b, k, k, generator=g) * (torch.rand(b, k, k, generator=g) < density) + torch.eye(k)
    adj = raw / raw.sum(-1, keepdim=True)
    query_type, cand_type = (IMAGE, TEXT) if direction == "i2t" else (TEXT, IMAGE)
    node_type = torch.full((k,), cand_type, dtype=torch.long)
    node_type[0] = query_type
    candidate_mask = torch.arange(k) > 0
    y = (torch.rand(b, k, generator=g) < 0.1) & candidate_mask
    y[:, 1] = True
    batch = GraphBatch(direction=direction, x=x, adj=adj, node_type=node_type, candidate_mask=candidate_mask,
                       query_index=torch.arange(b), node_index=torch.randint(0, 10 * b, (b, k), generator=g),
                       base_score=torch.rand(b, k, generator=g).sort(-1, descending=True).values, y=y)
    return batch.to(device)


def mirrored(batch: GraphBatch) -> GraphBatch:
    """The same graphs with the node types swapped, as the structure-alignment loss scores them."""
    return replace(batch, node_type=1 - batch.node_type)


def time_it(fn: Callable[[], object], repeat: int, warmup: int = 2, device: Optional[str] = None) -> float:
    """Median seconds per call of ``fn``."""
    sync = torch.cuda.synchronize if device is not None and str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# ------------------------------------------------------------------ learned re-ranker settings
#: Named variants: builder, model and training settings on top of BASE.
#: Training-free re-rankers fed to the ``prior*`` variants as node features.
PRIORS = ["prior:dual_softmax(temperature=0.1)", "prior:gnn_rerank(k1=10, k2=3)"]
#: Builder settings of the ``prior_k32*`` variants: priors, and 31 candidates per caption query.
PRIOR_K32 = {"node_features": ["rank", "reciprocal"] + PRIORS, "k_t2i": 32}
BASE = {"builder": {"num_pillars": 32}, "model": {"hidden_channels": 128}, "train": {}}
VARIANTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "paper": {},
    "rank": {"builder": {"node_features": ["rank"]}},
    "rank_recip": {"builder": {"node_features": ["rank", "reciprocal"]}},
    "rank_recip_k16": {"builder": {"node_features": ["rank", "reciprocal"], "k_t2i": 16}},
    "rank_recip_h256": {"builder": {"node_features": ["rank", "reciprocal"]}, "model": {"hidden_channels": 256}},
    "rank_recip_noalign": {"builder": {"node_features": ["rank", "reciprocal"]},
                           "train": {"alignment": 0.0, "mirror_contrastive": 0.0}},
    "rank_recip_hinge": {"builder": {"node_features": ["rank", "reciprocal"]}, "train": {"triplet": 0.0, "hinge": 1.0}},
    "rank_h256": {"builder": {"node_features": ["rank"]}, "model": {"hidden_channels": 256}},
    "rank_k16": {"builder": {"node_features": ["rank"], "k_t2i": 16}},
    "rank_k32": {"builder": {"node_features": ["rank"], "k_t2i": 32}},
    # training-free scores as node features (transductive: dual softmax and GNN re-ranking read all
    # test queries); the parameters are the dev-tuned ones of both combos (caption_proxy_f30k.json)
    "prior": {"builder": {"node_features": ["rank", "reciprocal"] + PRIORS}},
    "prior_k16": {"builder": {"node_features": ["rank", "reciprocal"] + PRIORS, "k_t2i": 16}},
    "prior_k32": {"builder": PRIOR_K32},
    "prior_k32_skip": {"builder": PRIOR_K32,
                       "model": {"feature_skip": 1.0}},
    "prior_k32_b32": {"builder": PRIOR_K32,
                      "train": {"batch_size": 32}},
    "prior_k32_skip_b32": {"builder": PRIOR_K32,
                           "model": {"feature_skip": 1.0}, "train": {"batch_size": 32}},
    "prior_k32_skip10": {"builder": PRIOR_K32,
                         "model": {"feature_skip": 10.0}},
    "prior_k32_noalign": {"builder": PRIOR_K32,
                          "train": {"alignment": 0.0, "mirror_contrastive": 0.0}},
    "rank_k32_skip": {"builder": {"node_features": ["rank"], "k_t2i": 32}, "model": {"feature_skip": 1.0}},
}


def variant(name: str) -> Dict[str, Dict[str, Any]]:
    """BASE updated with the named variant's settings."""
    if name not in VARIANTS:
        raise ValueError(f"unknown learned variant {name!r}; expected some of {sorted(VARIANTS)}")
    out = {part: dict(BASE[part]) for part in BASE}
    for part, kw in VARIANTS[name].items():
        out[part].update(kw)
    return out
