"""File I/O: atomic writes (nothing the user had is ever left half-written) and safe ``.npz`` reads."""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text", "ensure_writable_dir", "read_npz",
           "OutputError", "same_file", "removed_on_failure"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputError(OSError):
    """A file or folder could not be written.

    An :class:`OSError` with the system's ``errno`` and reason; ``filename`` is
    the path the caller asked for (never a temporary file), and ``str()`` is one
    line naming both: ``cannot write runs/a/best.pt: No space left on device``.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _output_error(err: OSError, path: Path) -> OutputError:
    """``err`` re-told for ``path``; a file standing where a folder should be is named."""
    reason = err.strerror or str(err)
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
    return OutputError(err.errno, reason, str(path))


def ensure_writable_dir(path: Union[str, os.PathLike]) -> Path:
    """Create the folder ``path`` (and its parents) if needed and check that files can be created in it.

    Call it before long work whose results go there, so that a read-only or
    misspelt location fails at once rather than after the work.

    Raises:
        OutputError: the folder cannot be created or written to.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pillargraph-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise _output_error(err, path) from None
    return path


def same_file(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    """Whether ``a`` and ``b`` name one existing file, through symbolic and hard links and relative paths.

    A path that does not exist is no other file, so writing it destroys nothing.
    """
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or unreadable): not the same existing file
        return False


@contextmanager
def removed_on_failure(path: Union[str, os.PathLike], created: bool = False,
                       keep: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Create the folder ``path`` for a block of work and remove it again if the block fails.

    :func:`ensure_writable_dir` is called on entry. When the block raises (a bad
    input found late, an interrupt), the folders this call created (``path`` and
    any missing parents) are removed with everything written in them, so a
    failed command leaves no empty or half-filled folder behind; folders that
    existed before are never touched.

    Args:
        path: the folder.
        created: the caller has just created ``path`` itself (e.g. with
            :func:`tempfile.mkdtemp`), so it counts as created here.
        keep: called with ``path`` after a failure; ``True`` keeps the folder
            (e.g. a run folder that already holds a resumable checkpoint).

    Raises:
        OutputError: the folder cannot be created or written to.
    """
    path = Path(path)
    top = path if created else next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
    try:
        yield ensure_writable_dir(path)
    except BaseException:
        if top is not None and not (keep is not None and keep(path)):
            shutil.rmtree(top, ignore_errors=True)
        raise


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the usual permissions (``0o666`` less the umask); on any
    error the temporary file is removed and an existing ``path`` is untouched.

    Raises:
        OutputError: the folder or file cannot be written (permission denied,
            read-only file system, disk full, ...): one line naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _output_error(err, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise _output_error(err, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_torch_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """:func:`torch.save` ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one starts with the second)
_NPY_MAGIC = b"\x93NUMPY"
# what reading a damaged archive or member raises, besides ValueError and OSError
_DAMAGE = (zipfile.BadZipFile, EOFError, zlib.error, KeyError, TypeError, NotImplementedError)


def read_npz(path: Union[str, os.PathLike], what: str, keys: Sequence[str],
             required: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Read a ``.npz`` file of plain arrays (no pickles) and check its keys.

    Every way a file can fail to be such an archive (empty, truncated, a bad
    checksum, a bare ``.npy``, text, a member that is not an array) is
    reported as one :class:`ValueError` naming the file and, where it applies,
    the member.

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
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a .npz {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    _check_zip_header(path, what)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, *_DAMAGE) as err:
        raise ValueError(f"{path}: damaged or truncated .npz {what} ({_reason(err)})") from None
    with archive:
        arrays = {key: _read_member(archive, key, path, what) for key in archive.files}
    unknown = sorted(set(arrays) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected a subset of {list(keys)}")
    for key in required:
        if key not in arrays:
            raise ValueError(f"{path}: missing required key {key!r}")
    return arrays


def _check_zip_header(path: Path, what: str) -> None:
    """Raise a :class:`ValueError` unless ``path`` starts like a ``.npz`` (a zip archive)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if not head:
        raise ValueError(f"{path}: the {what} file is empty (0 bytes)")
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: a single .npy array, not a .npz {what} (a zip of named arrays)")
    if not head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: not a .npz {what} (a .npz file is a zip archive of .npy arrays)")


def _read_member(archive: Any, key: str, path: Path, what: str) -> np.ndarray:
    try:
        value = archive[key]
    except (ValueError, OSError, *_DAMAGE) as err:
        if "pickle" in str(err) or "Object arrays" in str(err):
            why = "holds pickled Python objects, which are never loaded (only plain arrays are)"
        else:
            why = f"is damaged or not a .npy array ({_reason(err)})"
        raise ValueError(f"{path}: member {key!r} of the .npz {what} {why}") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: member {key!r} of the .npz {what} is not a .npy array")
    return value


def _reason(err: BaseException) -> str:
    """The exception's message on one line, shortened."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
