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
    from ..version import __version__
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


#: Exit status after the reader of stdout went away, like a process killed by SIGPIPE.
CLOSED_PIPE_STATUS = 128 + 13


class _PipeSafeStdout:
    """``sys.stdout`` that survives its reader going away (``pillargraph synthetic d | head -1``).

    The first write or flush that meets a closed pipe points the stream's file
    descriptor at ``os.devnull`` (Python's recommended handling), so the rest of
    the output is dropped while the command finishes its work and writes its
    files; :attr:`closed_pipe` then tells :func:`main` to exit like a process
    killed by SIGPIPE.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.closed_pipe = False

    def _drop(self) -> None:
        self.closed_pipe = True
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stream)
            pass

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pillargraph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    stdout = sys.stdout = _PipeSafeStdout(sys.stdout)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here when the output was short
    except (CLIError, ValueError, OSError) as err:
        print(f"pillargraph {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pillargraph {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout._stream
    return CLOSED_PIPE_STATUS if stdout.closed_pipe and status == 0 else status
