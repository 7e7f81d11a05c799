"""COCO-train-size benchmark: lists, graphs, one epoch and a 5K test re-ranking on a CPU machine.

A synthetic train split the size of MS-COCO train (113,287 images x 566,435
captions, from :class:`pillargraph.SyntheticWorld` embeddings; no dense train
matrix is ever made) goes through every stage of training, each stage timed on
its own and run in its own process, so that its peak RSS is its own
(``os.wait4`` of the child: the largest RSS of the child and of the processes it
waited for):

1. ``embeddings``: train (``--images``), dev (``--dev-images``, model selection
   only) and test (``--test-images``) splits of disjoint images of one world,
   written as embeddings files (the input of ``pillargraph neighbors``).
2. ``lists``: ``pillargraph neighbors`` (called in-process) on each split, at the
   depth the default graph builder reads (``--k``, default: derived from it).
3. ``graphs``: :meth:`PillarGraphBuilder.build` of every train query graph of
   both directions from the lists.
4. ``epoch``: one training epoch with the ``pillargraph train`` defaults (its own
   parser and :func:`pillargraph.cli.train.components`); the epoch is timed apart
   from graph building, dev evaluation and the fusion selection the next stage
   needs. ``--max-steps`` stops it early: a partial measurement, always reported
   as "partial epoch: X of Y steps".
5. ``rerank``: the trained checkpoint re-ranks the test split (its lists, or with
   ``--test-format dense`` the dense bundle), graph building and scoring timed apart.
6. ``dist``: the same epoch once on one process with ``--nproc`` threads, then on
   ``--nproc`` gloo processes of one thread each (``torchrun --standalone``), back
   to back; the speed-up is the ratio of the two epoch times of this run (and,
   when this run had an ``epoch`` stage of as many steps, the ratio over it too).

Writes ``OUT.json`` (command, full config, every stage) and ``OUT.md`` atomically
after every stage; intermediate files live in ``--workdir`` (default
``runs/coco_scale``, git-ignored). A smoke run::

    OMP_NUM_THREADS=1 python benchmarks/coco_scale.py --images 2000 --threads 1 \\
        --out /tmp/coco_scale_smoke --workdir /tmp/coco_scale_smoke.work

The full run (see Time below; ``--threads 1`` while other jobs hold the cores)::

    mkdir -p runs && nohup python benchmarks/coco_scale.py --threads 1 > runs/coco_scale.log 2>&1 &

The stages themselves live in ``coco_scale_stages.py``; this file runs them (each in a child process, timed
with ``os.wait4``), runs the distributed comparison and writes the report.

Time: the full run (113,287 images) took about 80 minutes on 2 shared cores with ``--dist-reference epoch``
(``benchmarks/results/coco_scale.md``); the default ``--dist-reference rerun`` adds one more epoch, about 25
minutes. The ``--images 2000`` smoke run takes about 4 minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph import SyntheticConfig, __version__
from pillargraph.cli.train import components
from pillargraph.data.neighbors import faiss_available
from pillargraph.io import atomic_write_text

from benchmarks.coco_scale_stages import (CHILD_STAGES, SPLITS, Paths, dist_worker, list_depth, peak_rss,
                                          set_threads, train_namespace)
from benchmarks.common import command_line, description, log, write_results

STAGES = ("embeddings", "lists", "graphs", "epoch", "rerank", "dist")
#: MS-COCO Karpathy train (train2014 + restval): images, five captions each.
COCO_TRAIN_IMAGES = 113_287
SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]


# ------------------------------------------------------------------ child processes
def gib(kib: float) -> float:
    """``ru_maxrss`` (KiB on Linux) in GiB."""
    return round(kib / 2 ** 20, 3)


def child_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_child_stage(args: argparse.Namespace, paths: Paths) -> None:
    """``--child NAME``: run one stage in this process and write its report for the parent."""
    name = args.child
    if name == "dist-worker":
        dist_worker(args, paths)
        return
    set_threads(args.child_threads)
    t0, c0 = time.perf_counter(), time.process_time()
    out = CHILD_STAGES[name](args, paths)
    out.update(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - c0, peak_rss=peak_rss(),
               torch_threads=torch.get_num_threads())
    atomic_write_text(paths.report(name), json.dumps(out, default=str))


def child_argv(argv: Sequence[str], name: str, threads: int) -> List[str]:
    return [str(SCRIPT), *argv, "--child", name, "--child-threads", str(threads)]


def wait_rusage(cmd: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``cmd``; its exit status, wall seconds and peak RSS (its own and its waited descendants')."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - t0, "peak_rss_gib": gib(usage.ru_maxrss),
            "cpu_s": usage.ru_utime + usage.ru_stime}  # the whole process: start-up and imports included


def run_stage(args: argparse.Namespace, argv: Sequence[str], paths: Paths, name: str,
              threads: int) -> Dict[str, Any]:
    """Run one stage, in a child process (default) or in this one (``--in-process``)."""
    report = paths.report(name)
    report.unlink(missing_ok=True)
    if args.in_process:
        previous = torch.get_num_threads()
        set_threads(threads)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            out = CHILD_STAGES[name](args, paths)
        finally:
            set_threads(previous)
        out.update(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - c0, torch_threads=threads,
                   wall_s=time.perf_counter() - t0,
                   peak_rss_gib=peak_rss()["self_gib"], rss_scope="whole benchmark process (--in-process)")
        return out
    ran = wait_rusage([sys.executable, *child_argv(argv, name, threads)], child_env(threads))
    if ran["returncode"] != 0:
        raise SystemExit(f"coco_scale: stage {name!r} failed (exit status {ran['returncode']})")
    out = json.loads(report.read_text())
    out.update(wall_s=ran["wall_s"], peak_rss_gib=ran["peak_rss_gib"], process_cpu_s=ran["cpu_s"],
               rss_scope="the stage's own process")
    return out


def run_dist(args: argparse.Namespace, argv: Sequence[str], paths: Paths,
             epoch_stage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The epoch on one process with ``nproc`` threads, then on ``nproc`` one-thread gloo processes.

    With ``epoch_stage`` (this run's ``epoch`` stage, ``--threads`` threads) the speed-up over it is
    reported too: on a machine shared with other jobs, ``nproc`` threads of one process can be slower
    than one thread, which inflates the speed-up over the ``nproc``-thread process.
    """
    n = args.nproc
    if args.dist_reference == "epoch":
        if epoch_stage is None or epoch_stage["torch_threads"] != n:
            raise SystemExit(f"coco_scale: --dist-reference epoch needs this run's epoch stage on --threads {n}")
        log(f"  reference: this run's epoch stage ({n} threads), not re-run")
        single = epoch_stage
    else:
        log(f"  single process, {n} threads")
        single = run_stage(args, argv, paths, "dist-single", n)
    for old in paths.workdir.glob("dist-rank*.json"):
        old.unlink()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           *child_argv(argv, "dist-worker", 1)]
    log(f"  {n} gloo processes, 1 thread each: torchrun --standalone --nproc-per-node {n} ...")
    ran = wait_rusage(cmd, child_env(1))
    if ran["returncode"] != 0:
        raise SystemExit(f"coco_scale: the torchrun epoch failed (exit status {ran['returncode']})")
    ranks = [json.loads((paths.workdir / f"dist-rank{r}.json").read_text()) for r in range(n)]
    epoch_s = max(r["epoch_s"] for r in ranks)
    rank_peaks = [r["peak_rss"]["self_gib"] for r in ranks]
    out = {"nproc": n, "single": single, "ranks": ranks, "torchrun_wall_s": ran["wall_s"],
            "reference": args.dist_reference,
            "seconds": ran["wall_s"] + (single["wall_s"] if args.dist_reference == "rerun" else 0.0),
            "wall_s": ran["wall_s"] + (single["wall_s"] if args.dist_reference == "rerun" else 0.0),
            "epoch_s_single": single["epoch_s"], "epoch_s_dist": epoch_s,
            "speedup": single["epoch_s"] / epoch_s,
            "steps": ranks[0]["steps"], "steps_per_epoch": ranks[0]["steps_per_epoch"],
            "partial": ranks[0]["partial"],
            "peak_rss_gib": max(single["peak_rss_gib"], ran["peak_rss_gib"]),
            "peak_rss_rank_gib": rank_peaks, "peak_rss_ranks_sum_gib": round(sum(rank_peaks), 3),
            "rss_scope": "max of the single-process child and torchrun with its workers; the ranks run at once, "
                         "so their sum is what the machine holds"}
    if args.dist_reference == "rerun" and epoch_stage is not None and epoch_stage["steps"] == out["steps"]:
        out["epoch_stage_threads"] = epoch_stage["torch_threads"]
        out["speedup_vs_epoch_stage"] = epoch_stage["epoch_s"] / epoch_s
    return out


# ------------------------------------------------------------------ report
def stage_seconds(name: str, s: Dict[str, Any]) -> str:
    """The stage's own figures, one line."""
    f = lambda v: f"{v:.1f}"  # noqa: E731
    if name == "embeddings":
        return "; ".join(f"{k} {s[k]['images']}x{s[k]['captions']} {f(s[k]['seconds'])}s" for k in SPLITS)
    if name == "lists":
        return f"{s.get('backend')}: " + "; ".join(f"{k} {f(s[k]['seconds'])}s ({s[k]['file_gib']:.2f} GiB)"
                                                    for k in SPLITS if k in s)
    if name == "graphs":
        return (f"load {f(s['load_lists_s'])}s; i2t {s['i2t']['graphs']} graphs {f(s['i2t']['seconds'])}s; "
                f"t2i {s['t2i']['graphs']} graphs {f(s['t2i']['seconds'])}s; tensors "
                f"{s['i2t']['memory_gib'] + s['t2i']['memory_gib']:.2f} GiB")
    if name == "epoch":
        return (f"epoch {f(s['epoch_s'])}s ({s['steps']} steps, {s['step_ms']:.0f} ms/step, {s['torch_threads']} "
                f"threads); graphs {f(s['train_graphs_s'])}s; dev eval {f(s['dev_eval_s'])}s; dev graphs + fusion "
                f"selection + checkpoints {f(s['other_s'])}s")
    if name == "rerank":
        return (f"{s['format']} {s['queries']['i2t']}+{s['queries']['t2i']} queries: graphs {f(s['graphs_s'])}s + "
                f"scoring {f(s['score_s'])}s; rSum {s['base']['rsum']:.1f} -> {s['reranked']['rsum']:.1f}")
    if name == "dist":
        ref = " (the epoch stage)" if s.get("reference") == "epoch" else ""
        text = (f"epoch {f(s['epoch_s_single'])}s on 1 process x {s['nproc']} threads{ref} vs "
                f"{f(s['epoch_s_dist'])}s "
                f"on {s['nproc']} gloo processes x 1 thread: speed-up {s['speedup']:.2f}x; ranks' peak RSS "
                f"{' + '.join(f'{v:.2f}' for v in s['peak_rss_rank_gib'])} = {s['peak_rss_ranks_sum_gib']:.2f} GiB")
        if "speedup_vs_epoch_stage" in s:
            text += (f"; over the epoch stage ({s['epoch_stage_threads']} threads, "
                     f"{f(s['speedup_vs_epoch_stage'] * s['epoch_s_dist'])}s): {s['speedup_vs_epoch_stage']:.2f}x")
        return text
    return ""


def markdown(payload: Dict[str, Any]) -> str:
    cfg = payload["config"]
    lines = [f"Command: `{payload['command']}`", "",
             f"Synthetic COCO-train-size benchmark: train {cfg['images']} images x "
             f"{cfg['images'] * cfg['captions_per_image']} captions, dev {cfg['dev_images']} images, test "
             f"{cfg['test_images']} images ({cfg['test_format']}); lists k={cfg['k']}; `pillargraph train` defaults"
             f"{' + ' + cfg['train_args'] if cfg['train_args'] else ''}; {payload['environment']['cpus']} CPU cores, "
             f"torch {payload['environment']['torch']}. "
             f"Status: {'complete' if payload['complete'] else 'in progress'}.",
             "", "Wall and CPU seconds of each stage's own work (CPU: all threads of its process, imports "
                 "excluded); peak RSS of its process (`os.wait4`, with the processes it waited for). The machine "
                 "was shared with other jobs (load average at each stage's start).", "",
             "| stage | seconds | CPU s | process wall s | peak RSS GiB | load avg | details |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, s in payload["stages"].items():
        cpu = f"{s['cpu_s']:.1f}" if "cpu_s" in s else "-"
        lines.append(f"| {name} | {s['seconds']:.1f} | {cpu} | {s['wall_s']:.1f} | {s['peak_rss_gib']:.2f} "
                     f"| {s.get('loadavg', float('nan')):.2f} | {stage_seconds(name, s)} |")
    for name in ("epoch", "dist"):
        s = payload["stages"].get(name)
        if s is not None and s["partial"]:
            lines += ["", f"**{name}: partial epoch: {s['steps']} of {s['steps_per_epoch']} steps** "
                          f"(--max-steps {cfg['max_steps']}); its times cover those steps only."]
    if payload["stages"]:
        peak = max(max(s["peak_rss_gib"], s.get("peak_rss_ranks_sum_gib", 0.0)) for s in payload["stages"].values())
        lines += ["", f"Largest peak RSS of any stage: {peak:.2f} GiB (target: at most 24 GiB; for `dist` the sum "
                      f"of the ranks)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES,
                   help=f"train images (default: {COCO_TRAIN_IMAGES}, MS-COCO Karpathy train)")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--test-images", type=int, default=None,
                   help="test images (default: 5000 at full size, proportional below it, at least 100)")
    p.add_argument("--dev-images", type=int, default=None,
                   help="dev images for the epoch's model and fusion selection (default: a fifth of the test "
                        "images, at least 100)")
    p.add_argument("--test-format", choices=("lists", "dense"), default="lists",
                   help="re-rank the test split's neighbour lists (default) or its dense bundle")
    p.add_argument("--k", type=int, default=None,
                   help="neighbours per list (default: the depth the graph builder reads, see list_depth)")
    p.add_argument("--backend", choices=("auto", "torch", "faiss"), default="auto",
                   help="`pillargraph neighbors --backend`")
    p.add_argument("--train-args", default="",
                   help="extra `pillargraph train` options, one string (default: none, the CLI defaults)")
    p.add_argument("--stages", default="all", help=f"comma-separated, from {','.join(STAGES)} (default: all)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop each epoch after this many steps: a partial measurement, reported as such "
                        "(default: the whole epoch)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch threads of the single-process stages (default: the CPUs this process may use)")
    p.add_argument("--nproc", type=int, default=2, help="gloo processes of the dist stage (default: 2)")
    p.add_argument("--dist-reference", choices=("rerun", "epoch"), default="rerun",
                   help="the dist stage's one-process reference: re-run the epoch back to back with the gloo "
                        "processes (default), or take this run's epoch stage (needs --threads equal to --nproc; "
                        "saves one epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-process", action="store_true",
                   help="run the stages in this process (quick tests; peak RSS is then the whole run's so far)")
    p.add_argument("--workdir", default="runs/coco_scale", help="intermediate files (default: runs/coco_scale)")
    p.add_argument("--out", default="benchmarks/results/coco_scale", help="OUT.json and OUT.md (no extension)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    return p


def resolve(args: argparse.Namespace, paths: Paths, p: argparse.ArgumentParser) -> List[str]:
    """Fill in the derived defaults; the stages to run."""
    if args.test_images is None:
        args.test_images = max(100, min(5000, round(5000 * args.images / COCO_TRAIN_IMAGES)))
    if args.dev_images is None:
        args.dev_images = max(100, args.test_images // 5)
    for name in ("images", "captions_per_image", "test_images", "dev_images", "threads", "nproc"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be positive")
    if args.max_steps is not None and args.max_steps < 1:
        p.error("--max-steps: must be positive")
    if args.k is None:
        builder, _, _ = components(train_namespace(args, paths))
        args.k = list_depth(builder)
    stages = list(STAGES) if args.stages == "all" else [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        p.error(f"--stages: unknown {unknown or 'empty'}; choose from {','.join(STAGES)}")
    return [s for s in STAGES if s in stages]


def initial_payload(args: argparse.Namespace, paths: Paths, stages: List[str], command: str) -> Dict[str, Any]:
    """``OUT.json`` before any stage ran: the command, the full config (the CLI's builder, model and training
    settings included) and the environment."""
    ns = train_namespace(args, paths)
    builder, model, config = components(ns)
    return {
        "command": command, "complete": False,
        "config": {**{k: v for k, v in vars(args).items() if not k.startswith("child")}, "stages": stages,
                   "train_items": args.images * args.captions_per_image,
                   "builder": builder.config, "model": model.to_config(),
                   "train": dataclasses.replace(config, select_fusion=True).to_dict(),
                   "synthetic": dataclasses.asdict(SyntheticConfig())},
        "environment": {"pillargraph": __version__, "torch": torch.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "faiss": faiss_available(),
                        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "stages": {}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_argparser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    paths = Paths(Path(args.workdir))
    stages = resolve(args, paths, p)
    if args.child is not None:
        run_child_stage(args, paths)
        return 0
    paths.workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    command = command_line("benchmarks/coco_scale.py", argv)
    payload = initial_payload(args, paths, stages, command)

    def write() -> None:
        write_results(out, payload, markdown(payload))

    log(f"{command}\n  train {args.images} images x {args.images * args.captions_per_image} captions, dev "
        f"{args.dev_images}, test {args.test_images} ({args.test_format}); k={args.k}; stages {','.join(stages)}; "
        f"workdir {paths.workdir}")
    for name in stages:
        load = os.getloadavg()[0]
        log(f"stage {name} (load average {load:.2f})")
        if name == "dist":
            result = run_dist(args, argv, paths, payload["stages"].get("epoch"))
        else:
            result = run_stage(args, argv, paths, name, args.threads)
        result["loadavg"] = load
        payload["stages"][name] = result
        log(f"stage {name}: {result['seconds']:.1f}s, peak RSS {result['peak_rss_gib']:.2f} GiB; "
            f"{stage_seconds(name, result)}")
        write()
    payload["complete"] = True
    write()
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
