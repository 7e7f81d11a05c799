"""The ``pillargraph`` command line.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers the sub-command and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
Expected failures (bad input, missing files, unwritable outputs) raise
:class:`CLIError`, ``ValueError`` or ``OSError`` and are printed as one line,
without a traceback, with exit status 2; warnings are printed as one line each.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Optional, Sequence

from ..io import OutputError

__all__ = ["main", "CLIError", "build_parser"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "train", "rerank", "merge", "evaluate", "neighbors", "synthetic", "baseline")


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


def _one_line(err: BaseException) -> str:
    """The message of an expected failure, on one line; an OS error names its path and cause."""
    if isinstance(err, OSError) and err.errno is not None and not isinstance(err, OutputError):
        text = f"{err.filename}: {err.strerror}" if err.filename else (err.strerror or str(err))
    else:
        text = str(err)
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line Python prints by default."""
    print(f"pillargraph: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``pillargraph evaluate x.npz | head -2``): stop quietly.

    Python's recommended handling: point stdout at ``os.devnull`` so the final
    flush at exit cannot raise again; exit like a process killed by SIGPIPE (141).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pillargraph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here when the output was short
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (CLIError, ValueError, OSError) as err:
        print(f"pillargraph {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pillargraph {args.command}: interrupted", file=sys.stderr)
        return 130
