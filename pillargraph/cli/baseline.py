"""``pillargraph baseline NAME BUNDLE.npz --out OUT.npz [--bank BANK.npz] [--param k=v ...]``.

Runs one training-free re-ranker and writes its re-scored similarities as
bundles. A bundle holds a single ``sim_i2t``, while a re-ranker produces one
matrix per direction (``i2t`` ranked along rows, ``t2i`` along columns), so:

- one direction (``--direction i2t`` or ``t2i``, or a method that supports only
  one): ``OUT.npz`` is the input bundle with ``sim_i2t`` replaced by that
  direction's matrix;
- both directions (the default): two bundles, ``OUT.i2t.npz`` and
  ``OUT.t2i.npz``, each the input bundle with ``sim_i2t`` replaced by that
  direction's matrix. Only the metrics of the file's own direction are
  meaningful (``pillargraph evaluate OUT.i2t.npz`` -> read the i2t rows).

All other fields (``txt2img``, intra matrices, embeddings) are copied unchanged.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..baselines import QueryBank, available_rerankers, evaluate_rescored, get_reranker
from ..baselines.lists import LIST_METHODS
from ..bundle import SimilarityBundle
from ..data.files import npz_format
from ..data.neighbors import NeighborLists
from ..device import resolve_device
from ..io import removed_on_failure
from ..metrics import evaluate, evaluate_lists
from . import CLIError
from .checks import check_not_input

__all__ = ["add_parser", "run", "parse_params", "output_paths", "format_comparison"]


def parse_params(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """Turn ``['k=10', 'alpha=0.5', 'name=x']`` into ``{'k': 10, 'alpha': 0.5, 'name': 'x'}``.

    Values are read as Python literals (numbers, ``True``/``False``/``None``,
    tuples); ``true``/``false`` are accepted too; anything else stays a string.

    Raises:
        CLIError: an item without ``=``, an empty key, or a repeated key.
    """
    out: Dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isidentifier():
            raise CLIError(f"--param: expected KEY=VALUE with KEY a parameter name, got {item!r}")
        if key in out:
            raise CLIError(f"--param: {key!r} given twice")
        raw = raw.strip()
        if raw.lower() in ("true", "false"):
            value: Any = raw.lower() == "true"
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        out[key] = value
    return out


def output_paths(out: Path, directions: Sequence[str]) -> Dict[str, Path]:
    """Where each direction's bundle goes: ``OUT.npz`` for one, ``OUT.<dir>.npz`` for several."""
    if out.suffix != ".npz":
        raise CLIError(f"--out: expected a .npz file name, got {out.name!r}")
    if len(directions) == 1:
        return {directions[0]: out}
    return {d: out.with_name(f"{out.stem}.{d}.npz") for d in directions}


def format_comparison(base: Dict[str, float], new: Dict[str, float], name: str,
                      directions: Sequence[str]) -> str:
    """Base vs re-ranked Recall@K per direction, with the change, as a small text table."""
    lines = [f"{'':14}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
    for d in directions:
        for label, m in (("base", base), (name, new)):
            lines.append(f"{d + ' ' + label:14.14}" + "".join(f"{m[f'{d}_r{k}']:8.2f}"
                                                              for k in (1, 5, 10)))
        lines.append(f"{d + ' change':14}" + "".join(f"{new[f'{d}_r{k}'] - base[f'{d}_r{k}']:+8.2f}"
                                                     for k in (1, 5, 10)))
    if len(directions) == 2:
        lines.append(f"rSum base {base['rsum']:.2f} -> {name} {new['rsum']:.2f} "
                     f"({new['rsum'] - base['rsum']:+.2f})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    choices = list(available_rerankers())
    try:
        method = get_reranker(args.name, **parse_params(args.param))
    except ValueError as err:
        if "unknown method" in str(err):
            raise CLIError(f"unknown method {args.name!r}; choose from {', '.join(choices)}") from None
        raise
    if args.direction == "both":
        directions: List[str] = list(method.directions)
    elif args.direction not in method.directions:
        raise CLIError(f"--direction: {method.name} supports only {list(method.directions)}")
    else:
        directions = [args.direction]
    paths = output_paths(Path(args.out), directions)
    for path in paths.values():
        check_not_input("--out", path, [("bundle", args.bundle), ("--bank", args.bank)])
    device = resolve_device(args.device)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise CLIError(f"output exists: {', '.join(existing)} (use --force to overwrite)")
    if method.needs_bank and args.bank is None:
        raise CLIError(f"{method.name} needs a query bank: pass --bank BANK.npz "
                       f"(keys bank_i2t and/or bank_t2i)")
    with removed_on_failure(Path(args.out).parent):  # a folder made here goes again if the command fails
        if npz_format(args.bundle) == "lists":
            return run_on_lists(method, args, directions)
        return run_on_bundle(method, args, directions, paths, device)


def run_on_bundle(method, args: argparse.Namespace, directions: Sequence[str], paths: Dict[str, Path],
                  device) -> int:
    """A method on a dense bundle: one bundle out per direction, its ``sim_i2t`` re-scored."""
    bundle = SimilarityBundle.load(args.bundle)
    bank = QueryBank.load(args.bank) if args.bank is not None else None
    scores = method(bundle, bank=bank, directions=directions, device=device,
                    chunk_size=args.chunk_size)
    for d, path in paths.items():
        bundle.replace(sim_i2t=scores[d].cpu().contiguous()).save(path)

    base = evaluate(bundle)
    new = evaluate_rescored(scores, bundle)
    print(f"{args.bundle}: {bundle.num_images} images, {bundle.num_texts} captions; {method!r}")
    print(format_comparison(base, new, method.name, directions))
    for d, path in paths.items():
        print(f"wrote {path} ({d}-re-scored sim_i2t)")
    return 0


def run_on_lists(method, args: argparse.Namespace, directions: Sequence[str]) -> int:
    """A method that works from neighbour lists, on a lists file: one file of lists out, the ``directions``
    re-ranked and the other direction's lists as they were."""
    if method.name not in LIST_METHODS:
        raise CLIError(f"{method.name} needs a dense bundle (it reads whole columns or intra-modal rows of "
                       f"the score matrix, which neighbour lists do not hold); methods that run on neighbour "
                       f"lists: {', '.join(sorted(LIST_METHODS))}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise CLIError(f"--out: expected a .npz file name, got {out.name!r}")
    check_not_input("--out", out, [("bundle", args.bundle)])
    if out.exists() and not args.force:
        raise CLIError(f"output exists: {out} (use --force to overwrite)")
    lists = NeighborLists.load(args.bundle)
    result = LIST_METHODS[method.name](lists, **method.params())
    if len(directions) < 2:  # --direction: the other direction's lists stay as they were
        result = lists.with_lists(**{d: result.lists(d) for d in directions})
    result.save(out)
    base, new = evaluate_lists(lists), evaluate_lists(result)
    print(f"{args.bundle}: neighbour lists, {lists.num_images} images, {lists.num_texts} captions; {method!r}")
    print(format_comparison(base, new, method.name, directions))
    print(f"wrote {out} (re-ranked {' and '.join(directions)} lists"
          f"{'' if len(directions) == 2 else ', the other direction as it was'})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "baseline", help="run a training-free re-ranker on a bundle",
        description="Run a training-free re-ranker (see pillargraph.baselines) on a bundle and "
                    "write the re-scored similarities. With two directions, writes OUT.i2t.npz and "
                    "OUT.t2i.npz (each the input bundle with sim_i2t re-scored for that direction); "
                    "with one, writes OUT.npz.")
    p.add_argument("name", help="method name, e.g. krnn, qb_norm, nnn, dual_softmax, alpha_qe")
    p.add_argument("bundle", help="test bundle .npz, or neighbour lists .npz for the methods that run "
                                  f"on lists ({', '.join(sorted(LIST_METHODS))}): re-ranked lists are written "
                                  "to --out")
    p.add_argument("--out", required=True, help="output .npz (see above for two directions)")
    p.add_argument("--bank", default=None,
                   help="query bank .npz (bank_i2t / bank_t2i), for methods that need one")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a published default, e.g. --param k=128 (repeatable)")
    p.add_argument("--direction", choices=("both", "i2t", "t2i"), default="both",
                   help="which retrieval direction(s) to re-rank (default: both)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="rows per chunk (default: sized from a memory budget)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)
