"""``pillargraph synthetic OUT_DIR [--seed 0] [--train-images N] ... [--complementarity C] [--force]``.

Writes ``train.npz``, ``dev.npz`` and ``test.npz`` bundles drawn from one
synthetic world (see :mod:`pillargraph.data.synthetic`) and prints the base
metrics of each. Every field of :class:`~pillargraph.data.SyntheticConfig` is
an option (``--caption-noise``, ``--modality-gap``, ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List

from ..data.synthetic import SPLIT_NAMES, SyntheticConfig, SyntheticWorld
from ..io import removed_on_failure
from ..metrics import evaluate
from . import CLIError
from .evaluate import format_metrics

__all__ = ["add_parser", "run"]


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"OUT_DIR: {out_dir} exists and is not a folder")
    targets = [out_dir / f"{name}.npz" for name in SPLIT_NAMES]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        raise CLIError(f"refusing to overwrite {', '.join(existing)} (use --force)")
    sizes = {"train": args.train_images, "dev": args.dev_images, "test": args.test_images}
    for name, value in sizes.items():
        if value < 1:
            raise CLIError(f"--{name}-images: expected a positive integer, got {value}")
    if args.captions_per_image < 1:
        raise CLIError(f"--captions-per-image: expected a positive integer, got "
                       f"{args.captions_per_image}")
    config = SyntheticConfig(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(SyntheticConfig)})
    with removed_on_failure(out_dir):  # checked before the splits are drawn; made here, gone again on failure
        report = write_splits(args, config, sizes, targets)
    if args.json:
        print(json.dumps({"seed": args.seed, "config": dataclasses.asdict(config),
                          "splits": report}, indent=2))
    return 0


def write_splits(args: argparse.Namespace, config: SyntheticConfig, sizes: Dict[str, int],
                 targets: List[Path]) -> Dict[str, Any]:
    """Draw and save the three splits (printing each one's metrics unless ``--json``); returns the report."""
    world = SyntheticWorld(config, seed=args.seed)
    report = {}
    for name, path in zip(SPLIT_NAMES, targets):
        bundle = world.sample(sizes[name], args.captions_per_image, name).to_bundle()
        bundle.save(path)
        metrics = evaluate(bundle)
        report[name] = {"path": str(path), "num_images": bundle.num_images,
                        "num_texts": bundle.num_texts, "metrics": metrics}
        if not args.json:
            print(format_metrics(metrics, f"{path}: {bundle.num_images} images, "
                                          f"{bundle.num_texts} captions (base cosine)"))
            print()
    return report


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synthetic", help="write synthetic train/dev/test bundles with known ground truth",
        description="Draw train, dev and test splits (disjoint images) from one synthetic "
                    "retrieval world, save them as OUT_DIR/{train,dev,test}.npz and print the "
                    "base cosine metrics of each. World options are the fields of "
                    "pillargraph.data.SyntheticConfig.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for train.npz, dev.npz, test.npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and splits (default: 0)")
    p.add_argument("--train-images", type=int, default=1000, help="images in train (default: 1000)")
    p.add_argument("--dev-images", type=int, default=1000, help="images in dev (default: 1000)")
    p.add_argument("--test-images", type=int, default=1000, help="images in test (default: 1000)")
    p.add_argument("--captions-per-image", type=int, default=5,
                   help="captions per image (default: 5)")
    p.add_argument("--force", action="store_true", help="overwrite existing bundle files")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    world = p.add_argument_group("world options (pillargraph.data.SyntheticConfig)")
    for f in dataclasses.fields(SyntheticConfig):
        world.add_argument(_option(f.name), dest=f.name, type=type(f.default), default=f.default,
                           metavar=type(f.default).__name__.upper(),
                           help=f"SyntheticConfig.{f.name} (default: {f.default})")
    p.set_defaults(func=run)
