"""File I/O: atomic writes (nothing the user had is ever left half-written) and safe ``.npz`` reads."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Sequence, Union

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text", "read_npz"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the usual permissions (``0o666`` less the umask); on any
    error the temporary file is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """:func:`torch.save` ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def read_npz(path: Union[str, os.PathLike], what: str, keys: Sequence[str],
             required: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Read a ``.npz`` file of plain arrays (no pickles) and check its keys.

    Args:
        path: the file.
        what: what the file holds, for error messages (e.g. ``'bundle'``).
        keys: the keys the file may hold.
        required: the keys it must hold.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable ``.npz``, an unknown key, or a missing required key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npz {what} ({err})") from None
    unknown = sorted(set(arrays) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected a subset of {list(keys)}")
    for key in required:
        if key not in arrays:
            raise ValueError(f"{path}: missing required key {key!r}")
    return arrays
