"""``pillargraph evaluate BUNDLE.npz [--folds 5] [--positives eccv|cxc|FILE.npz] [--json]``."""
from __future__ import annotations

import argparse
import json

from ..bundle import SimilarityBundle
from ..data.files import load_split
from ..data.neighbors import NeighborLists
from ..metrics import Positives, evaluate, evaluate_folds, evaluate_lists, evaluate_positives
from . import CLIError

_SOURCES = {"eccv": "ECCV Caption", "cxc": "CxC"}


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


def format_positive_metrics(metrics: dict, title: str = "") -> str:
    """A readable table of :func:`~pillargraph.metrics.evaluate_positives`'s result."""
    lines = [title] if title else []
    lines.append(f"{'':6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'mAP@R':>8}{'R-P':>8}")
    for d in ("i2t", "t2i"):
        lines.append(f"{d:6}{metrics[f'{d}_r1']:8.2f}{metrics[f'{d}_r5']:8.2f}{metrics[f'{d}_r10']:8.2f}"
                     f"{metrics[f'map_at_r_{d}']:8.2f}{metrics[f'rprecision_{d}']:8.2f}")
    return "\n".join(lines)


def _load_positives(spec: str, bundle: SimilarityBundle, anchor: int = 0) -> tuple:
    """``(Positives, description)`` of ``--positives`` (``anchor``: of a caption-proxy bundle)."""
    if spec in _SOURCES:
        from ..data.positives import check_coco5k_bundle, coco5k_positives
        anchor = check_coco5k_bundle(bundle, anchor)
        try:
            positives = coco5k_positives(spec, anchor)
        except ModuleNotFoundError as err:
            raise CLIError(f"--positives {spec}: {err}") from None
        split = "MS-COCO 5K test" if anchor is None else f"MS-COCO 5K caption proxy, anchor {anchor}"
        return positives, f"{_SOURCES[spec]} positives ({split})"
    if not spec.endswith(".npz"):
        raise CLIError(f"--positives: expected {', '.join(_SOURCES)} or a .npz file, got {spec!r}")
    return Positives.load(spec, shape=tuple(bundle.sim_i2t.shape)), f"positives of {spec}"


def _run_positives(args: argparse.Namespace, bundle: SimilarityBundle) -> int:
    if args.folds and args.folds > 1:
        raise CLIError("--positives: cannot be combined with --folds (extra positives are defined "
                       "on the whole split)")
    positives, what = _load_positives(args.positives, bundle, args.anchor)
    metrics = evaluate_positives(bundle, positives)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_positive_metrics(metrics, f"{args.bundle}: {what}, {positives.num_queries('i2t')} "
                                               f"image and {positives.num_queries('t2i')} caption queries"))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.folds is not None and args.folds < 1:
        raise CLIError(f"--folds: expected a positive number of folds, got {args.folds}")
    bundle = load_split(args.bundle)
    if args.positives is not None:
        if isinstance(bundle, NeighborLists):
            raise CLIError("--positives: R-Precision and mAP@R rank every positive, which needs a dense "
                           "bundle; neighbour lists hold only each query's top items")
        return _run_positives(args, bundle)
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
    p.add_argument("--positives", metavar="eccv|cxc|FILE.npz",
                   help="R@K with any positive, R-Precision and mAP@R against extra positives: "
                        "ECCV Caption or CxC (MS-COCO 5K test, 5000 x 25000, or its caption proxy, "
                        "5000 x 20000, see --anchor; needs the eval extra), or a positives .npz "
                        "(keys i2t_rows, i2t_cols, t2i_rows, t2i_cols, shape; see the docs)")
    p.add_argument("--anchor", type=int, default=0, choices=range(5), metavar="0-4",
                   help="with --positives eccv|cxc on a caption-proxy bundle: the caption position "
                        "that stood in for each image when it was built (default: 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
