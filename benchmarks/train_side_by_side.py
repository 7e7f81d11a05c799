"""``pillargraph train`` of this tree against a reference commit, side by side on the same data (CPU).

The reference commit is checked out into a temporary ``git worktree``; every
run is ``python -m pillargraph train`` in its own process, with ``PYTHONPATH``
on one tree, ``OMP_NUM_THREADS`` set to ``--threads``, and the working
directory outside both trees. For each split and configuration the two versions
run alternately (``ref, this`` then ``this, ref`` ...), ``--rounds`` times each,
so that both see the same load; the best of the rounds is reported. The figures
are the epoch time (``train_time_s`` of the run's ``metrics.jsonl``: the
training steps alone) and the wall time of the whole command (start-up, loading,
graph building, the epochs, dev evaluation, fusion selection, checkpoints), as
ratios reference / this tree, with the dev rSum and the epoch's mean losses of
both versions (same seed: they should agree up to float rounding).

Every run passes the complete flag set of ``--config`` (by default the
``pillargraph train`` defaults of the reference), so that both versions train
the same model whatever their own defaults; a tree whose ``train`` has
``--recipe`` also gets ``--recipe paper`` (whole training split, no episodes),
which the flags then override field by field.

Usage::

    python benchmarks/train_side_by_side.py --split synthetic=DIR/train.npz,DIR/dev.npz \\
        [--split proxy=P/train.npz,P/dev.npz] [--config rank=--node-features,rank] \\
        [--reference-ref 977df0a] [--rounds 2] [--threads 2] [--out benchmarks/results/train_speed_cpu]

Time: 2 versions x rounds x splits x configurations training runs; on 2 shared cores the 977df0a reference
took 5-10 minutes a run and this tree 0.5-1.5 minutes, so the recorded 2-split, 2-configuration, 2-round
run took about 1 hour 40 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, description, log  # noqa: E402
from pillargraph.io import atomic_write_text  # noqa: E402
from pillargraph.openmp import WAIT_VARIABLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: The ``pillargraph train`` defaults of the reference commit, every one spelled out.
DEFAULT_FLAGS = ("--num-pillars 32 --k-i2t 32 --k-t2i 8 --overlap-neighbors 10 --sparsity 0.8 --anchor both "
                 "--layer neighbor_attention --hidden 64 --layers 2 --heads 4 --dropout 0.1 --feature-skip 0 "
                 "--epochs 1 --batch-size 128 --lr 1e-3 --optimizer adamw --patience 4 --contrastive 1 "
                 "--triplet 1 --alignment 1 --mirror-contrastive 1 --hinge 0 --tau 0.1 --margin 0.2 "
                 "--align-tau 0.1 --hinge-margin 0 --fusion-outputs fused,directions --seed 0").split()


@contextmanager
def reference_worktree(ref: str, prefix: str) -> Iterator[Tuple[Path, Path]]:
    """A temporary working folder and a detached ``git worktree`` of ``ref`` inside it, ``(work, tree)``;
    both are removed on exit, also when the run is stopped with SIGTERM."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            work = Path(tmp)
            tree = work / "reference"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                yield work, tree
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False,
                               capture_output=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def has_recipes(tree: Path, env: Dict[str, str], cwd: Path) -> bool:
    """Whether the tree's ``pillargraph train`` takes ``--recipe``."""
    out = subprocess.run([sys.executable, "-m", "pillargraph", "train", "--help"], env=env, cwd=cwd,
                         capture_output=True, text=True, check=True)
    return "--recipe" in out.stdout


def tree_env(tree: Path, threads: int) -> Dict[str, str]:
    """The environment of a run of ``tree``: its ``PYTHONPATH`` alone, ``threads`` OpenMP threads, and no
    OpenMP wait policy (each version runs with its own default)."""
    drop = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", *WAIT_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def train_once(tree: Path, flags: Sequence[str], train: str, dev: str, work: Path, threads: int) -> Dict[str, Any]:
    """One ``pillargraph train`` run of ``tree``: wall time, the epoch record, the printed result."""
    env = tree_env(tree, threads)
    out = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    cmd = [sys.executable, "-m", "pillargraph", "train", "--train", train, "--dev", dev, "--out", str(out / "run"),
           *flags]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: pillargraph train failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"wall_s": wall, "train_time_s": sum(r["train_time_s"] for r in records),
            "dev_rsum": [r.get("dev", {}).get("rsum") for r in records], "best_dev_rsum": printed["best_dev_rsum"],
            "fusion": printed["fusion"], "losses": {k: v for k, v in records[-1].items() if k.startswith("loss_")},
            "load_before": load, "load_after": os.getloadavg()[0]}


def compare(results: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Best of the rounds per version, ratios reference / this tree, and how far the outcomes differ."""
    best = {v: {key: min(r[key] for r in runs) for key in ("train_time_s", "wall_s")} for v, runs in results.items()}
    ref, new = results["reference"][0], results["this"][0]
    loss_diff = max(abs(ref["losses"][k] - new["losses"][k]) / max(abs(ref["losses"][k]), 1e-12)
                    for k in ref["losses"])
    return {"best": best, "epoch_ratio": best["reference"]["train_time_s"] / best["this"]["train_time_s"],
            "wall_ratio": best["reference"]["wall_s"] / best["this"]["wall_s"],
            "dev_rsum": {v: runs[0]["best_dev_rsum"] for v, runs in results.items()},
            "fusion_dev_rsum": {v: runs[0]["fusion"]["dev_rsum"] for v, runs in results.items()},
            "loss_max_rel_diff": loss_diff,
            "loads": sorted(x for runs in results.values() for r in runs for x in (r["load_before"], r["load_after"]))}


def summary(name: str, c: Dict[str, Any]) -> str:
    """One block of text per split and configuration."""
    b = c["best"]
    return (f"{name}:\n"
            f"  epoch (train_time_s, best of rounds): reference {b['reference']['train_time_s']:.1f} s, "
            f"this {b['this']['train_time_s']:.1f} s -> {c['epoch_ratio']:.2f}x\n"
            f"  whole command (wall):                  reference {b['reference']['wall_s']:.1f} s, "
            f"this {b['this']['wall_s']:.1f} s -> {c['wall_ratio']:.2f}x\n"
            f"  dev rSum (best epoch): reference {c['dev_rsum']['reference']:.2f}, this {c['dev_rsum']['this']:.2f}; "
            f"after fusion selection: {c['fusion_dev_rsum']['reference']:.2f}, {c['fusion_dev_rsum']['this']:.2f}\n"
            f"  epoch mean losses: largest relative difference {c['loss_max_rel_diff']:.2e}\n"
            f"  load average seen: {c['loads'][0]:.2f} to {c['loads'][-1]:.2f}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", action="append", required=True, metavar="NAME=TRAIN,DEV",
                   help="a named pair of .npz files (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="NAME=FLAG,VALUE,...",
                   help="extra flags on top of the defaults, comma-separated (repeatable; 'default' always runs)")
    p.add_argument("--reference-ref", default="977df0a", help="the commit to compare with (default: 977df0a)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each version per split and config (default: 2)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run (default: 2)")
    p.add_argument("--describe", action="append", default=[], metavar="TEXT",
                   help="a line for the results file's header, e.g. how the splits were made (repeatable)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.txt")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    splits = dict(s.split("=", 1) for s in args.split)
    configs = {"default": []} | {c.split("=", 1)[0]: c.split("=", 1)[1].split(",") for c in args.config}
    payload: Dict[str, Any] = {"command": command_line("benchmarks/train_side_by_side.py", argv),
                               "reference": args.reference_ref, "threads": args.threads, "describe": args.describe,
                               "runs": {}, "compared": {}}
    with reference_worktree(args.reference_ref, "side-by-side-") as (work, reference):
        trees = {"reference": reference, "this": REPO}
        recipe = {v: has_recipes(t, tree_env(t, args.threads), work) for v, t in trees.items()}
        for sname, pair in splits.items():
            train, dev = (str(Path(p).resolve()) for p in pair.split(","))
            for cname, extra in configs.items():
                name = f"{sname}/{cname}"
                runs: Dict[str, List[Dict[str, Any]]] = {"reference": [], "this": []}
                for r in range(args.rounds):
                    for version in (("reference", "this") if r % 2 == 0 else ("this", "reference")):
                        flags = (["--recipe", "paper"] if recipe[version] else []) + DEFAULT_FLAGS + extra
                        runs[version].append(train_once(trees[version], flags, train, dev, work, args.threads))
                        log(f"{name} round {r + 1} {version}: epoch {runs[version][-1]['train_time_s']:.1f} s, "
                            f"wall {runs[version][-1]['wall_s']:.1f} s, load {runs[version][-1]['load_before']:.2f}")
                payload["runs"][name] = runs
                payload["compared"][name] = compare(runs)
                print(summary(name, payload["compared"][name]), flush=True)
    if args.out:
        atomic_write_text(args.out + ".json", json.dumps(payload, indent=2))
        header = [payload["command"], f"reference {args.reference_ref}, {args.threads} threads", *args.describe]
        atomic_write_text(args.out + ".txt", "".join(f"# {line}\n" for line in header) + "\n".join(
            summary(n, c) for n, c in payload["compared"].items()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
