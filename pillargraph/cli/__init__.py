"""The ``pillargraph`` command line.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers the sub-command and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
Expected failures (bad input, missing files) raise :class:`CLIError` or
``ValueError`` / ``FileNotFoundError`` and are printed as one line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

__all__ = ["main", "CLIError", "build_parser"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "train", "rerank", "evaluate", "neighbors", "synthetic", "baseline")


class CLIError(Exception):
    """An expected, user-facing failure: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, no usage dump
        self.exit(2, f"pillargraph: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = _Parser(prog="pillargraph",
                     description="Learnable pillar-based re-ranking for image-text retrieval.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"pillargraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pillargraph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"pillargraph {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pillargraph {args.command}: interrupted", file=sys.stderr)
        return 130
