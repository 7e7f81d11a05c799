"""Graph building and scoring of a re-ranking, this tree against a reference commit, side by side (CPU).

What ``pillargraph rerank CHECKPOINT SPLIT`` does, timed in two parts: building
the query graphs of both directions (:meth:`PillarGraphBuilder.build`, node
features and priors included) and scoring them
(:func:`pillargraph.rerank.rerank`). Each run is its own process with
``PYTHONPATH`` on one tree (the reference commit is checked out into a
temporary ``git worktree``); the versions alternate (``ref, this`` then
``this, ref`` ...), ``--rounds`` times each, and the best of the rounds is
reported as ratios reference / this tree, with the rSum of both re-rankings
(the same checkpoint: they should agree up to float rounding).

Usage::

    python benchmarks/rerank_side_by_side.py --checkpoint RUN/best.pt --split TEST.lists.npz \\
        [--reference-ref b88baa2] [--rounds 2] [--threads 1] [--out benchmarks/results/rerank_speed_cpu]

Time: 2 versions x rounds runs of about a minute each on the 5,000-image COCO-size test lists of
``benchmarks/coco_scale.py`` (1 thread, 2 shared cores): about 5 minutes with 2 rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.io import atomic_write_text

from benchmarks.common import REPO, command_line, description, portable_file
from benchmarks.train_side_by_side import reference_worktree, tree_env

SCRIPT = "benchmarks/rerank_side_by_side.py"

#: What one run does, in the child process (it imports the pillargraph of its ``PYTHONPATH``).
CHILD = """
import json, sys, time
import pillargraph
import torch
from pillargraph.data.files import load_split
from pillargraph.rerank import evaluate_any, model_builder, rerank
from pillargraph.train import model_from_checkpoint
model = model_from_checkpoint(sys.argv[1])
split = load_split(sys.argv[2])
builder = model_builder(model)
t0 = time.perf_counter()
graphs = {d: builder.build(split, d) for d in ("i2t", "t2i")}
t1 = time.perf_counter()
result = rerank(model, split, builder, graphs=graphs)
t2 = time.perf_counter()
print(json.dumps({"graphs_s": t1 - t0, "score_s": t2 - t1, "rerank_s": t2 - t0,
                  "base_rsum": evaluate_any(split)["rsum"], "rsum": evaluate_any(result)["rsum"]}))
"""


def run_once(tree: Path, checkpoint: str, split: str, threads: int, work: Path) -> Dict[str, Any]:
    """One timed re-ranking by ``tree``'s pillargraph in its own process."""
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", CHILD, checkpoint, split], env=tree_env(tree, threads),
                          cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: re-ranking failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_before": load}


def run_all(args: argparse.Namespace, trees: Dict[str, Path], work: Path) -> Dict[str, List[Dict[str, Any]]]:
    """Both versions ``--rounds`` times, alternating which goes first."""
    runs: Dict[str, List[Dict[str, Any]]] = {"reference": [], "this": []}
    for r in range(args.rounds):
        order = ("reference", "this") if r % 2 == 0 else ("this", "reference")
        for name in order:
            out = run_once(trees[name], args.checkpoint, args.split, args.threads, work)
            runs[name].append(out)
            print(f"round {r + 1} {name}: graphs {out['graphs_s']:.1f} s, scoring {out['score_s']:.1f} s, "
                  f"rSum {out['rsum']:.2f}", flush=True)
    return runs


def summary(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Best of the rounds per version and part, and the ratios reference / this tree."""
    best = {v: {k: min(r[k] for r in rs) for k in ("graphs_s", "score_s", "rerank_s")} for v, rs in runs.items()}
    return {"best": best, "ratio": {k: best["reference"][k] / best["this"][k] for k in best["this"]},
            "rsum": {v: rs[0]["rsum"] for v, rs in runs.items()}, "base_rsum": runs["this"][0]["base_rsum"]}


def report(args: argparse.Namespace, s: Dict[str, Any]) -> str:
    b, ratio = s["best"], s["ratio"]
    lines = [f"# {command_line(SCRIPT)}", f"# reference {args.reference_ref}, {args.threads} thread(s), best of "
             f"{args.rounds} alternating rounds"]
    for part, label in (("graphs_s", "graph building"), ("score_s", "scoring"), ("rerank_s", "both")):
        lines.append(f"{label}: reference {b['reference'][part]:.2f} s, this {b['this'][part]:.2f} s, "
                     f"ratio {ratio[part]:.2f}x")
    lines.append(f"rSum: base {s['base_rsum']:.2f}, reference {s['rsum']['reference']:.2f}, "
                 f"this {s['rsum']['this']:.2f}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a trained run's best.pt")
    p.add_argument("--split", required=True, help="the split to re-rank (.npz bundle or neighbour lists)")
    p.add_argument("--reference-ref", default="b88baa2", help="the commit to compare with (default: b88baa2)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each version (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (default: 1)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.txt")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.checkpoint, args.split = str(Path(args.checkpoint).resolve()), str(Path(args.split).resolve())
    t0 = time.perf_counter()
    with reference_worktree(args.reference_ref, "rerank-side-by-side-") as (work, reference):
        runs = run_all(args, {"reference": reference, "this": REPO}, work)
    s = summary(runs)
    text = report(args, s)
    print(text, end="")
    if args.out:
        record = {"command": command_line(SCRIPT), "checkpoint": portable_file(args.checkpoint),
                  "split": portable_file(args.split), "reference": args.reference_ref, "threads": args.threads,
                  "rounds": args.rounds, "wall_s": time.perf_counter() - t0, "runs": runs, **s}
        atomic_write_text(Path(f"{args.out}.json"), json.dumps(record, indent=1) + "\n")
        atomic_write_text(Path(f"{args.out}.txt"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
