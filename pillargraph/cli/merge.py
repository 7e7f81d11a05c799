"""``pillargraph merge PART.npz ... --out OUT.npz``: assemble the parts of a sharded ``rerank`` or ``neighbors``.

The kind of part is told by the first file's keys (:func:`~pillargraph.data.npz_format`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.files import load_split, npz_format
from ..data.list_shards import ListPart, merge_list_parts
from ..io import removed_on_failure
from ..shard import ShardPart, check_fingerprint, check_parts, merge_parts
from . import CLIError
from .checks import check_not_input, check_out
from .rerank import save_and_report

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out(out, args.force, [*(("part", p) for p in args.parts), ("--split", args.split)])
    with removed_on_failure(out.parent):  # a folder made here goes again if the merge fails
        if npz_format(args.parts[0]) == "lists-part":
            return merge_lists(args, out)
        return merge_reranked(args, out)


def merge_reranked(args: argparse.Namespace, out: Path) -> int:
    """The parts of ``pillargraph rerank --shard I/N``: write the re-ranked split."""
    parts = check_parts([ShardPart.load(p) for p in args.parts])  # before the split is read
    split_path = args.split or parts[0].split_path
    if split_path is None:
        raise CLIError("--split: the parts record no split file; pass the bundle or lists they were made from")
    check_not_input("--out", out, [("split recorded in the parts", split_path)])
    check_fingerprint(parts, split_path)
    split = load_split(split_path)
    result = merge_parts(parts, split)
    return save_and_report(result, split, out, f"re-ranked ({parts[0].output} output, fusion weights "
                                               f"{parts[0].fusion}, {len(parts)} shards)")


def merge_lists(args: argparse.Namespace, out: Path) -> int:
    """The parts of ``pillargraph neighbors --shard I/N``: write the unsharded neighbour lists."""
    if args.split is not None:
        raise CLIError("--split: neighbour-list parts hold everything the merge needs; leave --split out")
    parts = [ListPart.load(p) for p in args.parts]
    lists = merge_list_parts(parts)
    lists.save(out)
    print(f"{lists!r} from {len(parts)} shards; wrote {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="assemble the parts of a sharded rerank or neighbors",
                       description="Assemble the N part files of `pillargraph rerank --shard I/N` or "
                                   "`pillargraph neighbors --shard I/N` into the result the unsharded command "
                                   "writes.")
    p.add_argument("parts", nargs="+", help="the part files, one per shard, in any order")
    p.add_argument("--out", required=True, help="output .npz: the re-ranked bundle or neighbour lists, or the "
                                                "neighbour lists of a sharded search")
    p.add_argument("--split", default=None,
                   help="re-ranking parts only: the bundle or lists the parts were made from (default: the path "
                        "recorded in the parts; checked against their fingerprint either way)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
