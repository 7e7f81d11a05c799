"""``pillargraph evaluate BUNDLE.npz [--folds 5] [--json]``."""
from __future__ import annotations

import argparse
import json

from ..data.files import load_split
from ..data.neighbors import NeighborLists
from ..metrics import evaluate, evaluate_folds, evaluate_lists
from . import CLIError


def format_metrics(metrics: dict, title: str = "") -> str:
    """A readable two-line-per-direction table of :func:`~pillargraph.evaluate`'s result
    (ranks are left out when absent, as for neighbour lists)."""
    ranks = "i2t_medr" in metrics
    lines = [title] if title else []
    lines.append(f"{'':6}{'R@1':>8}{'R@5':>8}{'R@10':>8}" + (f"{'medr':>8}{'meanr':>9}" if ranks else ""))
    for d in ("i2t", "t2i"):
        line = f"{d:6}{metrics[f'{d}_r1']:8.2f}{metrics[f'{d}_r5']:8.2f}{metrics[f'{d}_r10']:8.2f}"
        if ranks:
            line += f"{metrics[f'{d}_medr']:8.1f}{metrics[f'{d}_meanr']:9.2f}"
        lines.append(line)
    lines.append(f"rSum {metrics['rsum']:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.folds is not None and args.folds < 1:
        raise CLIError(f"--folds: expected a positive number of folds, got {args.folds}")
    bundle = load_split(args.bundle)
    if isinstance(bundle, NeighborLists):
        if args.folds is not None and args.folds > 1:
            raise CLIError("--folds: fold evaluation ranks each fold's own captions, which needs a dense "
                           "bundle; neighbour lists rank the whole gallery")
        metrics = evaluate_lists(bundle)
        title = (f"{args.bundle}: neighbour lists, {bundle.num_images} images, {bundle.num_texts} captions "
                 f"(median and mean ranks need a dense bundle)")
    elif args.folds is not None and args.folds > bundle.num_images:
        raise CLIError(f"--folds: expected 1..{bundle.num_images} (one image per fold at least), "
                       f"got {args.folds}")
    elif args.folds is not None and args.folds > 1:
        metrics = evaluate_folds(bundle, folds=args.folds)
        title = f"{args.bundle}: mean over {args.folds} folds"
    else:
        metrics = evaluate(bundle)
        title = f"{args.bundle}: {bundle.num_images} images, {bundle.num_texts} captions"
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics(metrics, title))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Recall@K, rSum and ranks of a bundle's sim_i2t",
                       description="Evaluate the retrieval scores stored in a bundle.")
    p.add_argument("bundle", help="bundle .npz, or neighbour lists .npz (Recall@K only)")
    p.add_argument("--folds", type=int, default=None,
                   help="average over this many consecutive image folds (MS-COCO 1K: 5; "
                        "default: no folds)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
