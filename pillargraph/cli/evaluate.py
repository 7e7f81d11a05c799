"""``pillargraph evaluate BUNDLE.npz [--folds 5] [--json]``."""
from __future__ import annotations

import argparse
import json

from ..bundle import SimilarityBundle
from ..metrics import evaluate, evaluate_folds


def format_metrics(metrics: dict, title: str = "") -> str:
    """A readable two-line-per-direction table of :func:`~pillargraph.evaluate`'s result."""
    lines = [title] if title else []
    lines.append(f"{'':6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'medr':>8}{'meanr':>9}")
    for d in ("i2t", "t2i"):
        lines.append(f"{d:6}{metrics[f'{d}_r1']:8.2f}{metrics[f'{d}_r5']:8.2f}{metrics[f'{d}_r10']:8.2f}"
                     f"{metrics[f'{d}_medr']:8.1f}{metrics[f'{d}_meanr']:9.2f}")
    lines.append(f"rSum {metrics['rsum']:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    bundle = SimilarityBundle.load(args.bundle)
    if args.folds and args.folds > 1:
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
    p.add_argument("bundle", help="bundle .npz file")
    p.add_argument("--folds", type=int, default=0,
                   help="average over this many consecutive image folds (MS-COCO 1K: 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
