"""``pillargraph rerank --checkpoint RUN_DIR/best.pt BUNDLE.npz --out OUT.npz [--shard I/N]``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple, Union

from ..data.files import load_split
from ..device import resolve_device
from ..io import ensure_writable_dir
from ..rerank import OUTPUTS, Split, evaluate_any, rerank
from ..shard import file_fingerprint, parse_shard, rerank_shard, shard_from_env
from ..train import model_from_checkpoint
from . import CLIError
from .evaluate import format_metrics


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is not a ``.npz`` name or that exists without ``--force``."""
    if out.exists() and not force:
        raise CLIError(f"--out {out} exists; pass --force to replace it")
    if out.suffix != ".npz":
        raise CLIError(f"--out: expected a .npz file name, got {out.name!r}")


def parse_fusion(text: Optional[str]) -> Union[float, Tuple[float, float], None]:
    """``--fusion-weight``: ``W`` or ``W_I2T,W_T2I`` (``None`` when not given)."""
    if text is None:
        return None
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise CLIError(f"--fusion-weight: expected W or W_I2T,W_T2I (numbers), got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def shard_of(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``--shard``: ``I/N``, or ``torchrun`` (``RANK + 1`` of ``WORLD_SIZE``); ``None`` when not given."""
    if text is None:
        return None
    return shard_from_env() if text == "torchrun" else parse_shard(text)


def shard_out(shard_arg: Optional[str], out: str) -> Tuple[Optional[Tuple[int, int]], str]:
    """``--shard`` and ``--out`` of a sharded command: the shard, and ``--out`` with ``{shard}`` filled in.

    Under ``--shard torchrun`` every process writes its own part, so ``--out``
    must hold ``{shard}`` (unless there is only one process); with ``--shard I/N``
    a ``{shard}`` in ``--out`` becomes ``I`` too. Without ``--shard`` it is refused.
    """
    shard = shard_of(shard_arg)
    if shard is None:
        if "{shard}" in out:
            raise CLIError(f"--out {out}: {{shard}} is filled in with the shard number, which needs --shard I/N "
                           f"or --shard torchrun")
        return shard, out
    if shard_arg == "torchrun" and "{shard}" not in out and shard[1] > 1:
        raise CLIError("--out: under --shard torchrun every process writes its own part; put {shard} in "
                       "the name, e.g. part-{shard}.npz")
    return shard, out.replace("{shard}", str(shard[0]))


def run(args: argparse.Namespace) -> int:
    shard, args.out = shard_out(args.shard, args.out)
    out = Path(args.out)
    check_out(out, args.force)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size: must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    ensure_writable_dir(out.parent)
    model = model_from_checkpoint(args.checkpoint, map_location=device)
    bundle = load_split(args.bundle)
    fusion = parse_fusion(args.fusion_weight)
    if shard is not None:
        return write_shard(args, model, bundle, fusion, shard, device)
    used = fusion if fusion is not None else (model.fusion_weights or 1.0)
    result = rerank(model, bundle, fusion=fusion, output=args.output, batch_size=args.batch_size, device=device)
    return save_and_report(result, bundle, out, f"re-ranked ({args.output or 'stored'} output, "
                                                f"fusion weights {used})")


def save_and_report(result: Split, split: Split, out: Path, title: str) -> int:
    """Write a re-ranked split to ``out`` and print the base and the re-ranked metrics (exit status 0)."""
    result.save(out)
    print(format_metrics(evaluate_any(split), "base"))
    print(format_metrics(evaluate_any(result), title))
    print(f"wrote {out}")
    return 0


def write_shard(args: argparse.Namespace, model, bundle, fusion, shard: Tuple[int, int], device) -> int:
    """``--shard I/N``: score shard ``I`` of ``N`` and write its part file for ``pillargraph merge``."""
    inputs = {"checkpoint": file_fingerprint(args.checkpoint), "split": file_fingerprint(args.bundle)}
    part = rerank_shard(model, bundle, *shard, fusion=fusion, output=args.output, batch_size=args.batch_size,
                        device=device, inputs=inputs, split_path=str(Path(args.bundle).resolve()))
    part.save(args.out)
    (a, b), (c, d) = part.ranges()["i2t"], part.ranges()["t2i"]
    print(f"shard {part.index}/{part.count}: image queries [{a}, {b}) of {part.num_queries['i2t']}, "
          f"caption queries [{c}, {d}) of {part.num_queries['t2i']} ({part.output} output, fusion weights "
          f"{part.fusion}); wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("rerank", help="re-rank a bundle with a trained checkpoint",
                       description="Re-rank a bundle's top candidates with a trained re-ranker.")
    p.add_argument("bundle", help="bundle .npz or neighbour lists .npz to re-rank (lists in, lists out)")
    p.add_argument("--checkpoint", required=True, help="RUN_DIR/best.pt from `pillargraph train`")
    p.add_argument("--out", required=True, help="output .npz: the bundle with re-ranked sim_i2t (i2t) and "
                                                "sim_t2i (t2i), or re-ranked neighbour lists; with --shard, "
                                                "the shard's part file")
    p.add_argument("--output", default=None, choices=OUTPUTS,
                   help="fused (both directions' learned scores, per list), directions (each alone), "
                        "i2t or t2i only (default: the mode the checkpoint's fusion weights were chosen for)")
    p.add_argument("--fusion-weight", default=None,
                   help="weight of the learned scores against the base, W or W_I2T,W_T2I "
                        "(default: the dev-selected weights stored in the checkpoint; 0 = base ranking)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="score only shard I (from 1) of N of each direction's queries and write a part file; "
                        "`pillargraph merge` assembles the N parts into the unsharded result; 'torchrun' takes "
                        "I/N from RANK and WORLD_SIZE; a {shard} in --out becomes I (needed under torchrun)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="graphs per forward pass; shards are cut on its multiples (default: 1024)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cpu)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
