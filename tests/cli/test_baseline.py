import pytest
import torch

import pillargraph.cli as cli
from pillargraph import SimilarityBundle
from pillargraph.baselines import NNN, KRNN, QueryBank
from pillargraph.cli.baseline import parse_params
from pillargraph.cli import CLIError


@pytest.fixture
def main(monkeypatch):
    # the lead registers "baseline" in COMMANDS; make the tests independent of that
    monkeypatch.setattr(cli, "COMMANDS", tuple(dict.fromkeys(cli.COMMANDS + ("baseline",))))
    return cli.main


@pytest.fixture
def files(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64)
    t2i = torch.arange(6).repeat_interleave(2)
    txt = img[t2i] + 0.7 * torch.randn(12, 4, generator=g, dtype=torch.float64)
    b = SimilarityBundle.from_embeddings(img, txt, t2i)
    bank = QueryBank(bank_i2t=torch.randn(5, 12, generator=g, dtype=torch.float64),
                     bank_t2i=torch.randn(7, 6, generator=g, dtype=torch.float64))
    return b, b.save(tmp_path / "test.npz"), bank.save(tmp_path / "bank.npz"), bank


def test_both_directions_write_two_bundles(main, files, tmp_path, capsys):
    b, bpath, _, _ = files
    assert main(["baseline", "krnn", str(bpath), "--out", str(tmp_path / "out.npz"),
                 "--param", "k1_i2t=3", "--param", "k1_t2i=2"]) == 0
    want = KRNN(k1_i2t=3, k1_t2i=2)(b)
    for d in ("i2t", "t2i"):
        got = SimilarityBundle.load(tmp_path / f"out.{d}.npz")
        torch.testing.assert_close(got.sim_i2t, want[d])
        torch.testing.assert_close(got.sim_t2t, b.sim_t2t)  # other fields copied
    assert not (tmp_path / "out.npz").exists()
    text = capsys.readouterr().out
    assert "i2t base" in text and "t2i change" in text and "rSum base" in text


def test_one_direction_with_bank(main, files, tmp_path):
    b, bpath, kpath, bank = files
    out = tmp_path / "nnn.npz"
    assert main(["baseline", "NNN", str(bpath), "--bank", str(kpath), "--out", str(out),
                 "--param", "k=3", "--direction", "t2i"]) == 0
    torch.testing.assert_close(SimilarityBundle.load(out).sim_i2t,
                               NNN(k=3)(b, bank=bank, directions="t2i")["t2i"])


def test_errors_are_one_line_exit_2(main, files, tmp_path, capsys):
    _, bpath, kpath, _ = files
    out = str(tmp_path / "o.npz")
    cases = [
        (["baseline", "nope", str(bpath), "--out", out], "unknown method 'nope'; choose from"),
        (["baseline", "nnn", str(bpath), "--out", out], "needs a query bank"),
        (["baseline", "krnn", str(bpath), "--out", out, "--param", "k1"], "KEY=VALUE"),
        (["baseline", "krnn", str(bpath), "--out", out, "--param", "kk=3"], "bad parameters"),
        (["baseline", "krnn", str(bpath), "--out", out, "--param", "k1_i2t=-1"], "k1_i2t"),
        (["baseline", "krnn", str(tmp_path / "missing.npz"), "--out", out], "not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_existing_output_needs_force(main, files, tmp_path, capsys):
    _, bpath, _, _ = files
    out = tmp_path / "d.npz"
    argv = ["baseline", "dual_softmax", str(bpath), "--out", str(out), "--direction", "i2t"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


def test_parse_params():
    assert parse_params(["k=3", "alpha=0.5", "flag=true", "name=x", "t=(1, 2)"]) == \
        {"k": 3, "alpha": 0.5, "flag": True, "name": "x", "t": (1, 2)}
    for bad in (["=3"], ["k"], ["k=1", "k=2"]):
        with pytest.raises(CLIError):
            parse_params(bad)
