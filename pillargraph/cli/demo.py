"""``pillargraph demo``: synthetic splits -> train -> re-rank test -> base vs re-ranked table."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from ..baselines import evaluate_rescored
from ..data.synthetic import synthetic_splits
from ..device import resolve_device
from ..io import atomic_write_text, removed_on_failure
from ..metrics import evaluate
from ..train import fit_reranker
from . import CLIError
from .checks import check_new_file, run_folder
from .train import add_model_arguments, recipe_from_args


def comparison_table(rows: dict) -> str:
    """Markdown-style table of R@1/5/10 per direction and rSum for named results."""
    head = "| | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rSum |"
    lines = [head, "|" + "---|" * 8]
    for name, m in rows.items():
        vals = [m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {m['rsum']:.2f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    device = resolve_device(args.device)
    if args.results:
        check_new_file("--results", args.results, args.force)
    for name in ("train_images", "dev_images", "test_images"):
        if getattr(args, name) < 2:
            raise CLIError(f"--{name.replace('_', '-')}: expected at least 2 images, got {getattr(args, name)}")
    with ExitStack() as folders:  # made now, removed again if the demo fails (a run folder with last.pt stays)
        if args.results:
            folders.enter_context(removed_on_failure(Path(args.results).parent))
        if args.out:
            out = folders.enter_context(run_folder(args.out))
        else:
            out = folders.enter_context(removed_on_failure(tempfile.mkdtemp(prefix="pillargraph-demo-"),
                                                           created=True))
        return train_and_report(args, out, device, t0)


def train_and_report(args: argparse.Namespace, out: Path, device, t0: float) -> int:
    """Draw the splits, train into ``out``, re-rank test and print (and write) the comparison."""
    train, dev, test = synthetic_splits(args.train_images, args.dev_images, args.test_images,
                                        seed=args.seed)
    print(f"synthetic splits (seed {args.seed}): train {train.num_images} images / {train.num_texts} "
          f"captions, dev {dev.num_images}, test {test.num_images}")
    recipe = recipe_from_args(args)
    print(f"recipe {recipe.describe()}")

    def report(rec):
        dev_m = rec.get("dev", {})
        print(f"  epoch {rec['epoch'] + 1}: loss {rec.get('loss_total', float('nan')):.4f}  "
              f"dev rSum {dev_m.get('rsum', float('nan')):.2f}  ({rec['train_time_s']:.1f} s)")
    fitted = fit_reranker(train, dev, device=device, out_dir=out, progress=None, resume=False,
                          on_epoch_end=report, recipe=recipe, seed=args.seed, episode_seed=args.episode_seed)
    result = fitted.result
    print(f"best epoch {result.best_epoch + 1}, dev fusion weights {result.fusion}")
    scores = fitted.rescore(test, device=device)
    rows = {"base": evaluate(test),
            "re-ranked (learned)": evaluate_rescored(scores["learned"], test),
            "re-ranked (dev-fused)": evaluate_rescored(scores["fused"], test)}
    print(f"\ntest split ({test.num_images} images, {test.num_texts} captions):")
    print(comparison_table(rows))
    gain = rows["re-ranked (dev-fused)"]["rsum"] - rows["base"]["rsum"]
    seconds = time.perf_counter() - t0
    print(f"\nrSum change: {gain:+.2f}; run folder {out}; total {seconds:.0f} s")
    if args.results:
        write_results(args, rows, fitted, seconds)
        print(f"wrote {args.results}")
    return 0


def write_results(args: argparse.Namespace, rows: dict, fitted, seconds: float) -> None:
    """The demo's figures and the settings that produced them, as JSON (for a results file)."""
    settings = {k: v for k, v in sorted(vars(args).items())
                if k not in ("func", "command", "results", "out", "force") and not callable(v)}
    gain = rows["re-ranked (dev-fused)"]["rsum"] - rows["base"]["rsum"]
    record = {"command": f"pillargraph demo --results {args.results}", "settings": settings,
              "recipe": fitted.recipe.record(), "dev_fusion_weights": fitted.result.fusion,
              "test": {name: {k: round(v, 2) for k, v in m.items()} for name, m in rows.items()},
              "rsum_change": round(gain, 2), "seconds": round(seconds, 1), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    atomic_write_text(args.results, json.dumps(record, indent=2, default=str) + "\n")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train and evaluate a re-ranker on built-in synthetic data",
                       description="The main job: synthetic splits, training, re-ranking, a table.")
    p.add_argument("--train-images", type=int, default=1000)
    p.add_argument("--dev-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--out", default=None, help="run folder (default: a new temporary folder)")
    p.add_argument("--results", default=None, metavar="FILE.json",
                   help="also write the test figures and the settings to this JSON file")
    p.add_argument("--force", action="store_true", help="replace an existing --results file")
    add_model_arguments(p)
    p.set_defaults(func=run, epochs=3)
