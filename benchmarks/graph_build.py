"""Graph-building throughput: the batched PillarGraphBuilder against a per-query loop.

Builds every query graph of both directions of a 1000-image / 5000-caption
synthetic split and, in the same run, two per-query references on a sample of
queries, one query at a time with overlap weights from Python sets and double
loops: the prototype-style loop (each node's neighbour lists from a full sort
of its similarity row, as the research prototype does) and an optimised loop
(``torch.topk`` instead of full sorts). Both references are checked against
the batched graphs. Prints queries per second for all three and the ratios
(the target ratio refers to the prototype-style loop). Then builds all graphs of a 20,000-image / 100,000-caption split from
top-100 neighbour lists in a child process and prints its time and peak memory.

Targets on a 2-core machine: ratio >= 100x; the 6000 graphs of the small split
in < 2 s; the large split in < 10 min and < 8 GiB.

Usage::

    python benchmarks/graph_build.py [--sample 200] [--skip-large]

Time: about 2 minutes on 2 cores (results/graph_build.txt: the small split's graphs in under a second, the
large split's neighbour lists in 47 s and its 120,000 graphs in 23 s, plus drawing the data); --skip-large:
seconds.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph.data.synthetic import synthetic_embeddings, synthetic_splits
from pillargraph.graphs import PillarGraphBuilder

from benchmarks.common import description, peak_rss_gib


def _top(row, k: int, full_sort: bool):
    if full_sort:
        return torch.argsort(row, descending=True, stable=True)[:k]
    return torch.topk(row, k).indices


def reference_query(bundle, direction: str, q: int, L: int, K: int, C: int, gamma: float,
                    full_sort: bool = True):
    """One query graph, built the slow, obvious way (per query, sets and loops)."""
    s_i2t, s_i2i, s_t2t = bundle.sim_i2t, bundle.sim_i2i, bundle.sim_t2t
    mats = {"i2t": s_i2t, "t2i": s_i2t.T, "i2i": s_i2i, "t2t": s_t2t}
    qt, gt = ("i", "t") if direction == "i2t" else ("t", "i")
    inter = _top(mats[direction][q], L, full_sort)
    intra_rank = _top(mats[qt + "2" + qt][q], L + 1, full_sort).tolist()
    intra = torch.tensor([q] + [j for j in intra_rank if j != q][:L - 1])
    cands = _top(mats[direction][q], K - 1, full_sort).tolist()
    nodes = [(q, qt)] + [(c, gt) for c in cands]
    feats = torch.stack([torch.cat([mats[t + "2" + gt][u, inter], mats[t + "2" + qt][u, intra]])
                         for u, t in nodes])
    sets = [(set(_top(mats[t + "2i"][u], C, full_sort).tolist()),
             set(_top(mats[t + "2t"][u], C, full_sort).tolist())) for u, t in nodes]
    n = len(nodes)
    w = torch.zeros(n, n)
    for a in range(n):
        for b in range(n):
            w[a, b] = 2 * C if a == b else len(sets[a][0] & sets[b][0]) + len(sets[a][1] & sets[b][1])
    w = w / w.sum(1, keepdim=True)
    w = torch.where((w > gamma / n) | torch.eye(n, dtype=torch.bool), w, torch.zeros(()))
    return feats, w / w.sum(1, keepdim=True)


def small(sample: int, seed: int) -> dict:
    _, _, test = synthetic_splits(10, 10, 1000, seed=seed)
    PillarGraphBuilder().build(test, "t2i", indices=range(64))  # warm-up (allocator, first-call overheads)
    builder = PillarGraphBuilder()  # a fresh one: the timed run includes its neighbour tables
    t0 = time.perf_counter()
    i2t = builder.build(test, "i2t")
    t2i = builder.build(test, "t2i")
    batched = time.perf_counter() - t0
    n_queries = len(i2t) + len(t2i)

    gen = torch.Generator().manual_seed(seed)
    qi = torch.randperm(test.num_images, generator=gen)[:sample // 6].tolist()
    qt = torch.randperm(test.num_texts, generator=gen)[:sample - len(qi)].tolist()
    out = {"queries": n_queries, "batched_s": batched, "batched_qps": n_queries / batched}
    for name, full in (("prototype", True), ("optimised", False)):
        t0 = time.perf_counter()
        refs = [("i2t", q, reference_query(test, "i2t", q, 64, 32, 10, 0.8, full)) for q in qi]
        refs += [("t2i", q, reference_query(test, "t2i", q, 64, 8, 10, 0.8, full)) for q in qt]
        loop = time.perf_counter() - t0
        # the references must agree with the batched graphs, or the comparison means nothing
        for direction, q, (x, adj) in refs:
            g = (i2t if direction == "i2t" else t2i).graphs
            assert torch.allclose(g.x[q], x.float(), atol=1e-5), (direction, q)
            assert torch.allclose(g.adj[q], adj, atol=1e-5), (direction, q)
        out[f"{name}_queries"] = len(refs)
        out[f"{name}_s"] = loop
        out[f"{name}_qps"] = len(refs) / loop
        out[f"{name}_ratio"] = out["batched_qps"] / out[f"{name}_qps"]
    return out



def _large_child(queue, seed: int, k: int) -> None:
    from pillargraph.data import NeighborLists
    t0 = time.perf_counter()
    split = synthetic_embeddings(20_000, 5, seed=seed, split="test")
    lists = NeighborLists.from_embeddings(split.img_emb, split.txt_emb, split.txt2img, k=k,
                                          img_intra_emb=split.img_intra_emb,
                                          txt_intra_emb=split.txt_intra_emb, keep_embeddings=False)
    t_lists = time.perf_counter() - t0
    builder = PillarGraphBuilder()
    t0 = time.perf_counter()
    i2t = builder.build(lists, "i2t")
    t2i = builder.build(lists, "t2i")
    t_graphs = time.perf_counter() - t0
    peak = peak_rss_gib()
    queue.put({"images": 20_000, "captions": 100_000, "k": k, "neighbor_lists_s": t_lists,
               "graphs_s": t_graphs, "graphs": len(i2t) + len(t2i), "peak_rss_gib": peak})


def large(seed: int, k: int = 100) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process, so peak RSS is this job's alone
    queue = ctx.Queue()
    proc = ctx.Process(target=_large_child, args=(queue, seed, k))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=120, help="queries for the per-query reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-large", action="store_true", help="skip the 20K/100K split")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    res = {"small": small(args.sample, args.seed)}
    s = res["small"]
    print(f"1000 images / 5000 captions, both directions ({s['queries']} graphs)")
    print(f"  batched builder : {s['batched_s']:.3f} s   {s['batched_qps']:10.0f} queries/s")
    for name in ("prototype", "optimised"):
        print(f"  {name + ' loop':16s}: {s[name + '_s']:.3f} s for {s[name + '_queries']} queries   "
              f"{s[name + '_qps']:10.1f} queries/s   batched is {s[name + '_ratio']:.0f}x faster")
    print("  targets: >= 100x the prototype-style loop; all 6000 graphs in < 2 s")
    if not args.skip_large:
        res["large"] = big = large(args.seed)
        print(f"20,000 images / 100,000 captions from top-{big['k']} neighbour lists")
        print(f"  neighbour lists : {big['neighbor_lists_s']:.1f} s")
        print(f"  all {big['graphs']} graphs : {big['graphs_s']:.1f} s   peak RSS {big['peak_rss_gib']:.2f} GiB "
              f"(targets < 600 s, < 8 GiB)")
    if args.json:
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
