"""Checks shared by the sub-commands: output paths, numeric settings and input splits.

Every check runs before the work starts and fails with one line that names
the flag and the file (see :class:`~pillargraph.cli.CLIError`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Optional, Tuple, Union

from ..data.neighbors import NeighborLists
from ..io import removed_on_failure, same_file
from ..metrics import check_list_cutoffs
from . import CLIError

__all__ = ["check_out", "check_not_input", "check_new_file", "setting_type", "check_splits", "run_folder"]

PathLike = Union[str, os.PathLike]
#: ``(what, path)`` pairs of a command's input files, e.g. ``('--checkpoint', 'run/best.pt')``.
Inputs = Iterable[Tuple[str, Optional[PathLike]]]


def check_not_input(flag: str, out: PathLike, inputs: Inputs) -> None:
    """Refuse an output path that is one of the inputs (the same file, also through links).

    Args:
        flag: the output's flag, for the message (e.g. ``'--out'``).
        out: the output path.
        inputs: ``(what, path)`` of the command's input files (``None`` paths are skipped),
            e.g. ``[('bundle', 'test.npz'), ('--checkpoint', 'run/best.pt')]`` (``what`` may be empty).

    Raises:
        CLIError: ``out`` is one of ``inputs``.
    """
    for what, path in inputs:
        if path is not None and same_file(out, path):
            raise CLIError(f"{flag} {out}: is the same file as the input {what + ' ' if what else ''}{path}; writing it would "
                           f"destroy the input, choose another name")


def check_new_file(flag: str, path: PathLike, force: bool) -> None:
    """Refuse a folder, or an existing file without ``--force``."""
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; name a file")
    if path.exists() and not force:
        raise CLIError(f"{flag} {path} exists; pass --force to replace it")


def check_out(out: PathLike, force: bool, inputs: Inputs = ()) -> None:
    """Check an ``--out`` ``.npz`` file before the work: its name first (``--force`` cannot mend
    that), then that it is none of ``inputs``, then that ``--force`` allows replacing it.

    Raises:
        CLIError: not a ``.npz`` name, one of the inputs, a folder, or an existing file without ``--force``.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise CLIError(f"--out: expected a .npz file name, got {out.name!r}")
    check_not_input("--out", out, inputs)
    check_new_file("--out", out, force)


def setting_type(check: Callable[[str, float], Any], name: str) -> Callable[[str], float]:
    """An argparse ``type`` for a float setting, checked by ``check(name, value)`` at parse time.

    ``check`` raises :class:`ValueError` for a bad value (e.g.
    :meth:`pillargraph.train.TrainConfig.check_setting`); argparse then prints
    ``argument --tau: ...`` as one line.
    """
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            check(name, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None
        return value
    parse.__name__ = "float"
    return parse


def check_splits(builder: Any, train: Tuple[PathLike, Any], dev: Tuple[PathLike, Any]) -> None:
    """Check ``(path, split)`` of ``--train`` and ``--dev`` before training: the builder can make both
    directions' graphs of each (sizes, list depths), and dev lists are deep enough for R@10, which picks
    the epoch and the fusion weights (found after a whole epoch otherwise).

    Raises:
        CLIError: ``'--dev DEV.npz: ...'``, naming the flag, the file and the setting.
    """
    for flag, (path, split) in (("--train", train), ("--dev", dev)):
        try:
            builder.check(split)
            if flag == "--dev" and isinstance(split, NeighborLists):
                check_list_cutoffs(split)
        except ValueError as err:
            raise CLIError(f"{flag} {path}: {err}") from None


def run_folder(path: PathLike, created: bool = False) -> ContextManager[Path]:
    """A training run's folder for the block that trains into it (see
    :func:`~pillargraph.io.removed_on_failure`): made now, removed again if the command fails before
    the run has a checkpoint to resume from (``last.pt``); a folder that existed before is kept."""
    return removed_on_failure(path, created=created, keep=lambda folder: (folder / "last.pt").exists())
