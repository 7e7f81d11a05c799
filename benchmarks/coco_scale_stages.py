"""COCO-train-size benchmark, the stages: what each stage of ``benchmarks/coco_scale.py`` does and measures
(embeddings, lists, graphs, one timed epoch, the test re-ranking, and one process of the distributed epoch), the
files they pass on, and the trainers that time an epoch.

Each stage runs in a process of its own (``coco_scale.py --child NAME``) or, with ``--in-process``, in the
parent; see ``benchmarks/coco_scale.py --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from pillargraph import SyntheticConfig, SyntheticWorld
from pillargraph.cli import build_parser
from pillargraph.cli import main as cli_main
from pillargraph.cli.train import components
from pillargraph.data import NeighborLists
from pillargraph.data.files import load_split
from pillargraph.data.neighbors import faiss_available
from pillargraph.io import atomic_write, atomic_write_text
from pillargraph.rerank import evaluate_any, model_builder, rerank
from pillargraph.train import Trainer, model_from_checkpoint
from pillargraph.train.distributed import DistributedTrainer, init_from_env, shutdown

from benchmarks.common import log, peak_rss_gib

SPLITS = ("train", "dev", "test")


# ------------------------------------------------------------------ small helpers
def peak_rss() -> Dict[str, float]:
    """Peak RSS of this process and of the largest child it has waited for, GiB."""
    return {"self_gib": round(peak_rss_gib("self"), 3), "children_gib": round(peak_rss_gib("children"), 3)}


def file_gib(path: Path) -> float:
    return round(path.stat().st_size / 2 ** 30, 3)


def tensor_gib(*tensors: Any) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / 2 ** 30, 3)


def graph_gib(dataset) -> float:
    """Memory of one :class:`QueryGraphDataset`'s batched tensors (graphs and pillars)."""
    g = dataset.graphs
    parts = [getattr(g, f.name) for f in dataclasses.fields(g)]
    if dataset.pillars is not None:
        parts += [getattr(dataset.pillars, f.name) for f in dataclasses.fields(dataset.pillars)]
    return tensor_gib(*parts)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


class Paths:
    """The files one run passes from stage to stage."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def emb(self, split: str) -> Path:
        return self.workdir / f"{split}.emb.npz"

    def lists(self, split: str) -> Path:
        return self.workdir / f"{split}.lists.npz"

    @property
    def test_bundle(self) -> Path:
        return self.workdir / "test.bundle.npz"

    def test_split(self, fmt: str) -> Path:
        return self.test_bundle if fmt == "dense" else self.lists("test")

    @property
    def run(self) -> Path:
        return self.workdir / "run"

    def report(self, name: str) -> Path:
        return self.workdir / f"stage-{name}.json"


def need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise SystemExit(f"coco_scale: {path} is missing; run the {stage!r} stage first (--stages)")
    return path


# ------------------------------------------------------------------ training settings
def train_namespace(args: argparse.Namespace, paths: Paths) -> argparse.Namespace:
    """The parsed options of ``pillargraph train --epochs 1 --episode-images 0`` (the default recipe on the whole
    split, whose lists are searched over all of it, plus ``--train-args``)."""
    argv = ["train", "--train", str(paths.lists("train")), "--dev", str(paths.lists("dev")),
            "--out", str(paths.run), "--epochs", "1", "--episode-images", "0", "--seed", str(args.seed),
            *shlex.split(args.train_args)]
    return build_parser().parse_args(argv)


def list_depth(builder) -> int:
    """Deepest top-k list a build with ``builder`` reads, and 11 for R@10 on the dev and test lists.

    Cross-modal kinds: ``max(num_pillars, candidates)``; intra kinds:
    ``max(num_pillars, context_nodes) + 1`` (the query itself ranks first);
    overlap tables: ``overlap_neighbors``.
    """
    return max(builder.num_pillars + 1, builder.context_nodes + 1, builder.num_candidates("i2t"),
               builder.num_candidates("t2i"), builder.overlap_neighbors, 11)


# ------------------------------------------------------------------ timed trainers
class _StopEpoch(Exception):
    """Raised before step ``max_steps + 1`` of a partial epoch."""


class TimedEpoch:
    """Mixin for :class:`Trainer` and :class:`DistributedTrainer`: times graph building, the epoch and the
    dev evaluation, logs progress, and with ``max_steps`` ends the epoch after that many steps."""

    max_steps: Optional[int] = None

    def start_timing(self, max_steps: Optional[int], verbose: bool) -> None:
        self.max_steps, self.verbose = max_steps, verbose
        self.timing: Dict[str, float] = {}
        self.steps_done = self.steps_total = 0
        self.epoch_record: Dict[str, Any] = {}

    def prepare(self, train):
        t0, c0 = time.perf_counter(), time.process_time()
        data = super().prepare(train)
        self.timing["train_graphs_s"] = time.perf_counter() - t0
        self.timing["train_graphs_cpu_s"] = time.process_time() - c0
        self.steps_total = math.ceil(data["source"].num_texts / self.config.batch_size)
        if self.verbose:
            log(f"  train graphs built in {self.timing['train_graphs_s']:.1f}s; epoch of {self.steps_total} steps")
        return data

    def make_batch(self, data, captions, generator):
        if self.max_steps is not None and self.steps_done >= self.max_steps:
            raise _StopEpoch
        self.steps_done += 1
        limit = min(self.steps_total, self.max_steps or self.steps_total)
        every = max(1, limit // 10)
        if self.verbose and self.steps_done % every == 0 and self.steps_done < limit:
            spent = time.perf_counter() - self._epoch_t0
            left = spent / self.steps_done * (limit - self.steps_done)
            log(f"  step {self.steps_done}/{limit}: {spent:.0f}s, about {left:.0f}s left")
        return super().make_batch(data, captions, generator)

    def train_epoch(self, data, epoch, run, total_steps):
        self._epoch_t0 = t0 = time.perf_counter()
        c0 = time.process_time()
        try:
            record = super().train_epoch(data, epoch, run, total_steps)
        except _StopEpoch:
            record = {"epoch": epoch, "step": run.step, "train_time_s": time.perf_counter() - t0}
        self.timing["epoch_s"] = record["train_time_s"]
        self.timing["epoch_cpu_s"] = time.process_time() - c0
        self.epoch_record = record
        return record

    def evaluate_dev(self, dev, dev_graphs):
        t0 = time.perf_counter()
        metrics = super().evaluate_dev(dev, dev_graphs)
        self.timing["dev_eval_s"] = self.timing.get("dev_eval_s", 0.0) + time.perf_counter() - t0
        return metrics


class TimedTrainer(TimedEpoch, Trainer):
    """:class:`Trainer` with :class:`TimedEpoch`."""


class TimedDistributedTrainer(TimedEpoch, DistributedTrainer):
    """:class:`DistributedTrainer` with :class:`TimedEpoch`."""


def train_one_epoch(args: argparse.Namespace, paths: Paths, *, out_dir: Optional[Path], select_fusion: bool,
                    context=None, verbose: bool = True) -> Dict[str, Any]:
    """One epoch through :meth:`Trainer.fit` with the CLI defaults; the timings and what was trained."""
    ns = train_namespace(args, paths)
    t0 = time.perf_counter()
    train = NeighborLists.load(need(paths.lists("train"), "lists"))
    dev = NeighborLists.load(need(paths.lists("dev"), "lists"))
    load_s = time.perf_counter() - t0
    builder, model, config = components(ns)
    config = dataclasses.replace(config, select_fusion=select_fusion)
    if context is not None and context.distributed:
        trainer = TimedDistributedTrainer(model, builder, config, out_dir=out_dir, progress=False, context=context)
    else:
        trainer = TimedTrainer(model, builder, config, out_dir=out_dir, progress=False)
    trainer.start_timing(args.max_steps, verbose)
    t0 = time.perf_counter()
    result = trainer.fit(train, dev, resume=False)
    fit_s = time.perf_counter() - t0
    t = trainer.timing
    record = trainer.epoch_record
    out = {"load_lists_s": load_s, "fit_s": fit_s, "train_graphs_s": t["train_graphs_s"], "epoch_s": t["epoch_s"],
           "train_graphs_cpu_s": t["train_graphs_cpu_s"], "epoch_cpu_s": t["epoch_cpu_s"],
           "dev_eval_s": t.get("dev_eval_s", 0.0),
           "other_s": fit_s - t["train_graphs_s"] - t["epoch_s"] - t.get("dev_eval_s", 0.0),
           "steps": trainer.steps_done, "steps_per_epoch": trainer.steps_total,
           "partial": trainer.steps_done < trainer.steps_total,
           "step_ms": 1000 * t["epoch_s"] / max(trainer.steps_done, 1),
           "train_items": train.num_texts, "batch_size": config.batch_size, "torch_threads": torch.get_num_threads(),
           "loss": {k[5:]: v for k, v in record.items() if k.startswith("loss_")},
           "dev_rsum_learned": result.best_dev_rsum, "fusion": result.fusion,
           "model_parameters": sum(p.numel() for p in model.parameters())}
    return out


# ------------------------------------------------------------------ the stages (each in its own process)
def stage_embeddings(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    world = SyntheticWorld(SyntheticConfig(), seed=args.seed)
    sizes = {"train": args.images, "dev": args.dev_images, "test": args.test_images}
    out: Dict[str, Any] = {}
    for split in SPLITS:
        t0 = time.perf_counter()
        s = world.sample(sizes[split], args.captions_per_image, split)
        sample_s = time.perf_counter() - t0
        arrays = {"img_emb": s.img_emb, "txt_emb": s.txt_emb, "txt2img": s.txt2img,
                  "img_intra_emb": s.img_intra_emb, "txt_intra_emb": s.txt_intra_emb}
        atomic_write(paths.emb(split), lambda fh: np.savez(fh, **{k: v.numpy() for k, v in arrays.items()}))
        info = {"images": s.num_images, "captions": s.num_texts, "sample_s": sample_s,
                "seconds": time.perf_counter() - t0, "file_gib": file_gib(paths.emb(split)),
                "memory_gib": tensor_gib(*arrays.values())}
        if split == "test" and args.test_format == "dense":
            t1 = time.perf_counter()
            bundle = s.to_bundle()
            bundle.save(paths.test_bundle)
            info.update(dense_bundle_s=time.perf_counter() - t1, dense_bundle_gib=file_gib(paths.test_bundle))
            del bundle
        out[split] = info
        log(f"  {split}: {s.num_images} images x {s.num_texts} captions in {info['seconds']:.1f}s "
            f"({info['file_gib']:.2f} GiB on disk)")
    return out


def stage_lists(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    splits = SPLITS if args.test_format == "lists" else ("train", "dev")
    for split in splits:
        argv = ["neighbors", str(need(paths.emb(split), "embeddings")), "--k", str(args.k), "--out",
                str(paths.lists(split)), "--backend", args.backend, "--force", "--quiet"]
        log(f"  pillargraph {' '.join(argv)}")
        t0, c0 = time.perf_counter(), time.process_time()
        status = cli_main(argv)
        if status != 0:
            raise SystemExit(f"coco_scale: pillargraph neighbors failed on {split} (exit status {status})")
        out[split] = {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                      "file_gib": file_gib(paths.lists(split)),
                      "argv": ["pillargraph", *argv]}
    out["backend"] = args.backend if args.backend != "auto" else ("faiss" if faiss_available() else "torch")
    return out


def stage_graphs(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    builder, _, _ = components(train_namespace(args, paths))
    t0 = time.perf_counter()
    lists = NeighborLists.load(need(paths.lists("train"), "lists"))
    out: Dict[str, Any] = {"load_lists_s": time.perf_counter() - t0, "builder": builder.config}
    keep = []  # both directions held at once, as training holds them
    for direction in ("i2t", "t2i"):
        t0, c0 = time.perf_counter(), time.process_time()
        graphs = builder.build(lists, direction)
        out[direction] = {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                          "graphs": len(graphs), "memory_gib": graph_gib(graphs)}
        keep.append(graphs)
        log(f"  {direction}: {len(graphs)} graphs in {out[direction]['seconds']:.1f}s "
            f"({out[direction]['memory_gib']:.2f} GiB of tensors)")
    return out


def stage_epoch(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    if paths.run.exists():
        shutil.rmtree(paths.run)  # this run's own folder: a fresh run, never a resumed one
    out = train_one_epoch(args, paths, out_dir=paths.run, select_fusion=True)
    out["checkpoint"] = str(paths.run / "best.pt")
    return out


def stage_rerank(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    t0 = time.perf_counter()
    model = model_from_checkpoint(need(paths.run / "best.pt", "epoch"))
    split = load_split(need(paths.test_split(args.test_format), "lists" if args.test_format == "lists"
                            else "embeddings"))
    load_s = time.perf_counter() - t0
    builder = model_builder(model)
    t0 = time.perf_counter()
    graphs = {d: builder.build(split, d) for d in ("i2t", "t2i")}
    graphs_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = rerank(model, split, builder, graphs=graphs)
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base, after = evaluate_any(split), evaluate_any(result)
    eval_s = time.perf_counter() - t0
    return {"load_s": load_s, "graphs_s": graphs_s, "score_s": score_s, "rerank_s": graphs_s + score_s,
            "evaluate_s": eval_s, "queries": {"i2t": split.num_images, "t2i": split.num_texts},
            "format": args.test_format, "fusion": model.fusion_weights,
            "base": {k: base[k] for k in ("i2t_r1", "t2i_r1", "rsum")},
            "reranked": {k: after[k] for k in ("i2t_r1", "t2i_r1", "rsum")}}


def stage_dist_single(args: argparse.Namespace, paths: Paths) -> Dict[str, Any]:
    return train_one_epoch(args, paths, out_dir=None, select_fusion=False)


def dist_worker(args: argparse.Namespace, paths: Paths) -> None:
    """One torchrun process: the same epoch as :func:`stage_dist_single`, shared by the process group."""
    set_threads(1)
    t0 = time.perf_counter()
    context = init_from_env("cpu")
    try:
        out = train_one_epoch(args, paths, out_dir=None, select_fusion=False, context=context,
                              verbose=context.is_main)
    finally:
        shutdown(context)
    out.update(rank=context.rank, world_size=context.world_size, backend=context.backend,
               seconds=time.perf_counter() - t0, peak_rss=peak_rss())
    atomic_write_text(paths.workdir / f"dist-rank{context.rank}.json", json.dumps(out, default=str))


CHILD_STAGES: Dict[str, Callable[[argparse.Namespace, Paths], Dict[str, Any]]] = {
    "embeddings": stage_embeddings, "lists": stage_lists, "graphs": stage_graphs, "epoch": stage_epoch,
    "rerank": stage_rerank, "dist-single": stage_dist_single}

