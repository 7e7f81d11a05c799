"""Checks shared by the sharding tests: merged files equal to unsharded ones, one-line merge errors."""
import numpy as np

from pillargraph.cli import main


def same_npz(a, b) -> None:
    """The two ``.npz`` files hold the same keys with bit-for-bit equal arrays of the same dtype."""
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key


def merge_error(capsys, *args) -> str:
    """Run ``pillargraph merge ARGS``: exit status 2 and exactly one error line, no traceback; returns it."""
    assert main(["merge", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err
