"""pillargraph.io: broken .npz files are one clear ValueError; failed writes are one OutputError and lose nothing."""
import errno
import os

import numpy as np
import pytest

from pillargraph.io import OutputError, atomic_write, atomic_write_text, ensure_writable_dir, read_npz

from .helpers.faults import fail_with, good_npz, make_broken

KEYS = ("a", "b")


@pytest.mark.parametrize("kind, message", [
    ("truncated", "damaged or truncated .npz bundle"),
    ("bad_crc", "member 'a' of the .npz bundle is damaged"),
    ("empty", "the bundle file is empty"),
    ("npy_renamed", "a single .npy array, not a .npz bundle"),
    ("garbage_members", "member 'a' of the .npz bundle is damaged"),
    ("not_npy_member", "member 'a' of the .npz bundle is not a .npy array"),
    ("text", "not a .npz bundle"),
    ("pickled_member", "member 'a' of the .npz bundle holds pickled Python objects"),
])
def test_broken_npz_is_one_clear_value_error(tmp_path, kind, message):
    path = make_broken(kind, tmp_path / "x.npz")
    with pytest.raises(ValueError) as exc:
        read_npz(path, "bundle", KEYS)
    text = str(exc.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def test_text_file_is_not_reported_as_pickled_data(tmp_path):
    path = make_broken("text", tmp_path / "x.npz")
    with pytest.raises(ValueError) as exc:
        read_npz(path, "bundle", KEYS)
    assert "pickle" not in str(exc.value)


def test_good_npz_reads_and_folder_and_missing_file(tmp_path):
    arrays = read_npz(good_npz(tmp_path / "g.npz"), "bundle", KEYS, required=("a",))
    assert arrays["b"].shape == (3, 4)
    with pytest.raises(ValueError, match="is a folder"):
        read_npz(tmp_path, "bundle", KEYS)
    with pytest.raises(FileNotFoundError, match="bundle file not found"):
        read_npz(tmp_path / "none.npz", "bundle", KEYS)


# ---------------------------------------------------------------------------------- writes
@pytest.mark.parametrize("where, code, reason", [
    ("fsync", errno.ENOSPC, "No space left on device"),
    ("mkstemp", errno.EACCES, "Permission denied"),
    ("mkstemp", errno.EROFS, "Read-only file system"),
    ("replace", errno.EACCES, "Permission denied"),
    ("mkdir", errno.EACCES, "Permission denied"),
])
def test_failed_write_is_one_line_naming_path_and_cause_and_loses_nothing(tmp_path, monkeypatch,
                                                                          where, code, reason):
    path = tmp_path / "out.txt"
    path.write_text("what the user had")
    fail_with(monkeypatch, where, code)
    with pytest.raises(OutputError) as exc:
        atomic_write_text(path, "new")
    assert str(exc.value) == f"cannot write {path}: {reason}"
    assert exc.value.errno == code and exc.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_text() == "what the user had"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no temporary file left


def test_write_into_a_file_names_the_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*afile/sub/x.npz: .*afile is a file, not a folder"):
        atomic_write(tmp_path / "afile" / "sub" / "x.npz", lambda fh: fh.write(b""))


def test_other_errors_pass_through_and_clean_up(tmp_path):
    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("serialiser bug")
    with pytest.raises(RuntimeError, match="serialiser bug"):
        atomic_write(tmp_path / "x.bin", boom)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            atomic_write_text(ro / "x.txt", "x")
        with pytest.raises(OutputError, match="Permission denied"):
            ensure_writable_dir(ro)
    finally:
        ro.chmod(0o755)


def test_ensure_writable_dir(tmp_path, monkeypatch):
    made = ensure_writable_dir(tmp_path / "a" / "b")
    assert made.is_dir() and os.listdir(made) == []  # the probe file is gone
    fail_with(monkeypatch, "mkstemp", errno.EROFS)
    with pytest.raises(OutputError, match=r"cannot write .*a/b: Read-only file system"):
        ensure_writable_dir(made)
