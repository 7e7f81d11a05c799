"""``pillargraph rerank --checkpoint RUN_DIR/best.pt BUNDLE.npz --out OUT.npz``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.files import load_split
from ..device import resolve_device
from ..io import ensure_writable_dir
from ..rerank import OUTPUTS, evaluate_any, rerank
from ..train import model_from_checkpoint
from . import CLIError
from .evaluate import format_metrics


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CLIError(f"--out {out} exists; pass --force to replace it")
    if out.suffix != ".npz":
        raise CLIError(f"--out: expected a .npz file name, got {out.name!r}")
    device = resolve_device(args.device)
    ensure_writable_dir(out.parent)
    model = model_from_checkpoint(args.checkpoint, map_location=device)
    bundle = load_split(args.bundle)
    fusion = None
    if args.fusion_weight is not None:
        try:
            parts = [float(v) for v in args.fusion_weight.split(",")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise CLIError(f"--fusion-weight: expected W or W_I2T,W_T2I (numbers), "
                           f"got {args.fusion_weight!r}")
        fusion = parts[0] if len(parts) == 1 else tuple(parts)
    used = fusion if fusion is not None else (model.fusion_weights or 1.0)
    result = rerank(model, bundle, fusion=fusion, output=args.output, device=device)
    result.save(out)
    print(format_metrics(evaluate_any(bundle), "base"))
    print(format_metrics(evaluate_any(result), f"re-ranked ({args.output or 'stored'} output, "
                                                f"fusion weights {used})"))
    print(f"wrote {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("rerank", help="re-rank a bundle with a trained checkpoint",
                       description="Re-rank a bundle's top candidates with a trained re-ranker.")
    p.add_argument("bundle", help="bundle .npz or neighbour lists .npz to re-rank (lists in, lists out)")
    p.add_argument("--checkpoint", required=True, help="RUN_DIR/best.pt from `pillargraph train`")
    p.add_argument("--out", required=True, help="output .npz: the bundle with re-ranked sim_i2t (i2t) and "
                                                "sim_t2i (t2i), or re-ranked neighbour lists")
    p.add_argument("--output", default=None, choices=OUTPUTS,
                   help="fused (both directions' learned scores, per list), directions (each alone), "
                        "i2t or t2i only (default: the mode the checkpoint's fusion weights were chosen for)")
    p.add_argument("--fusion-weight", default=None,
                   help="weight of the learned scores against the base, W or W_I2T,W_T2I "
                        "(default: the dev-selected weights stored in the checkpoint; 0 = base ranking)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cpu)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
