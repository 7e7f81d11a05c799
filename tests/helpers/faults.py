"""Faults for tests: broken ``.npz`` files and OS errors injected into pillargraph's writes."""
import os
import zipfile

import numpy as np

from pillargraph import io

#: Kinds of broken ``.npz`` file that :func:`make_broken` writes.
BROKEN_NPZ = ("truncated", "bad_crc", "empty", "npy_renamed", "garbage_members", "not_npy_member",
              "text", "pickled_member")


def good_npz(path):
    """A valid archive with members ``a`` and ``b``."""
    np.savez(path, a=np.arange(2000, dtype=np.float64), b=np.ones((3, 4), dtype=np.float32))
    return path


def flip_byte_in_member_data(path):
    """Corrupt the stored data of the first member (its CRC then fails)."""
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[0]
    data = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra; the member's data follows
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size - 8] ^= 0xFF
    path.write_bytes(bytes(data))


def make_broken(kind, path):
    """Write a broken ``.npz`` of the given kind (see :data:`BROKEN_NPZ`) to ``path``."""
    if kind not in BROKEN_NPZ:
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "truncated":
        good = good_npz(path.with_name("good.npz")).read_bytes()
        path.write_bytes(good[:len(good) // 2])
    elif kind == "bad_crc":
        good_npz(path)
        flip_byte_in_member_data(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy_renamed":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif kind == "garbage_members":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.npy", b"\x93NUMPY\x01\x00garbage")
    elif kind == "not_npy_member":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.npy", b"plain words, not an array")
    elif kind == "text":
        path.write_text("sim_i2t,txt2img\n0.1,0\n")
    elif kind == "pickled_member":
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    return path


def fail_with(monkeypatch, where, code):
    """Make one step of an atomic write fail with the OS error ``code``."""
    def boom(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    target = {"fsync": (io.os, "fsync"), "mkstemp": (io.tempfile, "mkstemp"),
              "replace": (io.os, "replace"), "mkdir": (io.Path, "mkdir")}[where]
    monkeypatch.setattr(*target, boom)
