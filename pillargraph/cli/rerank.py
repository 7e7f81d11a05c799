"""``pillargraph rerank --checkpoint RUN_DIR/best.pt BUNDLE.npz --out OUT.npz [--shard I/N]``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..data.files import load_split
from ..device import resolve_device
from ..io import removed_on_failure
from ..rerank import (DEFAULT_FUSION_OUTPUTS, OUTPUTS, Split, evaluate_any, fusion_for_output, rerank,
                      resolve_fusion, select_fusion_weights)
from ..shard import file_fingerprint, parse_shard, rerank_shard, shard_from_env
from ..train import load_checkpoint, model_from_state
from . import CLIError
from .checks import check_out
from .evaluate import format_metrics


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
    check_out(out, args.force, [("bundle", args.bundle), ("--checkpoint", args.checkpoint), ("--dev", args.dev)])
    if args.batch_size < 1:
        raise CLIError(f"--batch-size: must be positive, got {args.batch_size}")
    explicit = parse_fusion(args.fusion_weight)
    if explicit is not None and args.dev is not None:
        raise CLIError("--dev: selects the fusion weights on a dev split, and --fusion-weight gives them; "
                       "pass one of the two")
    device = resolve_device(args.device)
    with removed_on_failure(out.parent):
        state = load_checkpoint(args.checkpoint, map_location=device)
        model = model_from_state(state, args.checkpoint)
        bundle = load_split(args.bundle)
        fusion = explicit if explicit is not None else stored_or_selected(args, model, state, device)
        w_i2t, w_t2i, output = resolve_fusion(model, fusion, args.output)
        if shard is not None:
            return write_shard(args, model, bundle, (w_i2t, w_t2i), output, shard, device)
        result = rerank(model, bundle, fusion=(w_i2t, w_t2i), output=output, batch_size=args.batch_size,
                        device=device)
        return save_and_report(result, bundle, out, f"re-ranked ({output} output, fusion weights "
                                                    f"i2t {w_i2t:g}, t2i {w_t2i:g})")


def stored_or_selected(args: argparse.Namespace, model, state: Dict[str, Any], device) -> Any:
    """The fusion weights of ``--output``'s mode: the checkpoint's dev selection, or a selection on a dev
    split now (``--dev``, else the run's recorded dev split); never an assumed weight.

    Raises:
        CLIError: the checkpoint holds no weights for the mode and no dev split can be read (names
            ``--dev`` and ``--fusion-weight``).
    """
    stored = model.fusion_weights
    if args.dev is None and stored and fusion_for_output(stored, args.output) is not None:
        return stored
    dev_path, recorded = args.dev or (state.get("run_info") or {}).get("dev_split"), args.dev is None
    if args.dev is None:
        modes = ", ".join(stored.get("per_output") or [stored.get("output", "fused")]) if stored else ""
        why = (f"dev-selected fusion weights for the {modes} output only, not for --output {args.output}"
               if stored else "no dev-selected fusion weights (the run did not finish, or it is last.pt)")
        if dev_path is None or not Path(dev_path).is_file():
            gone = f", and the run's dev split {dev_path} is gone" if dev_path else ""
            raise CLIError(f"--checkpoint {args.checkpoint}: holds {why}{gone}; pass --dev DEV.npz to select "
                           f"them on a dev split, or --fusion-weight W (1: the learned scores alone)")
    outputs = (args.output,) if args.output else tuple(state["train_config"].get("fusion_outputs",
                                                                                 DEFAULT_FUSION_OUTPUTS))
    choice = select_fusion_weights(model, load_split(dev_path), output=outputs, batch_size=args.batch_size,
                                   device=device)
    print(f"fusion weights selected on {'the dev split recorded in the run, ' if recorded else '--dev '}"
          f"{dev_path}: i2t {choice.i2t:g}, t2i {choice.t2i:g}, {choice.output} output (dev rSum "
          f"{choice.base_rsum:.2f} -> {choice.dev_rsum:.2f})")
    return choice


def save_and_report(result: Split, split: Split, out: Path, title: str) -> int:
    """Write a re-ranked split to ``out`` and print the base and the re-ranked metrics (exit status 0)."""
    result.save(out)
    print(format_metrics(evaluate_any(split), "base"))
    print(format_metrics(evaluate_any(result), title))
    print(f"wrote {out}")
    return 0


def write_shard(args: argparse.Namespace, model, bundle, fusion: Tuple[float, float], output: str,
                shard: Tuple[int, int], device) -> int:
    """``--shard I/N``: score shard ``I`` of ``N`` and write its part file for ``pillargraph merge``."""
    inputs = {"checkpoint": file_fingerprint(args.checkpoint), "split": file_fingerprint(args.bundle)}
    part = rerank_shard(model, bundle, *shard, fusion=fusion, output=output, batch_size=args.batch_size,
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
                        "i2t or t2i only (default: the mode the checkpoint's fusion weights were chosen for; "
                        "another mode takes the weights chosen on dev for it, see --dev)")
    p.add_argument("--fusion-weight", default=None,
                   help="weight of the learned scores against the base, W or W_I2T,W_T2I "
                        "(default: the dev-selected weights of the output mode stored in the checkpoint; "
                        "0 = base ranking)")
    p.add_argument("--dev", default=None, metavar="DEV.npz",
                   help="select the fusion weights and output mode on this dev split (bundle or lists) now; "
                        "without it, a checkpoint with no weights for the output mode (an unfinished run's "
                        "best.pt, last.pt) selects them on the dev split recorded in the run, or is refused")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="score only shard I (from 1) of N of each direction's queries and write a part file; "
                        "`pillargraph merge` assembles the N parts into the unsharded result; 'torchrun' takes "
                        "I/N from RANK and WORLD_SIZE; a {shard} in --out becomes I (needed under torchrun)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="graphs per forward pass; shards are cut on its multiples (default: 1024)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cpu)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
