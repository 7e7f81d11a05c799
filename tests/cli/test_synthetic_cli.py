import json

import pytest
import torch

from pillargraph import SimilarityBundle, cli, evaluate
from pillargraph.data import SyntheticConfig, synthetic_splits


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # the lead registers the command in COMMANDS; until then register it here
    if "synthetic" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("synthetic",))


ARGS = ["--seed", "3", "--train-images", "20", "--dev-images", "8", "--test-images", "12",
        "--captions-per-image", "3", "--complementarity", "0.5", "--caption-noise", "0.3"]


def test_writes_the_same_bundles_as_the_library(tmp_path, capsys):
    assert cli.main(["synthetic", str(tmp_path / "out"), *ARGS]) == 0
    printed = capsys.readouterr().out
    want = synthetic_splits(20, 8, 12, captions_per_image=3, seed=3,
                            config=SyntheticConfig(complementarity=0.5, caption_noise=0.3))
    for name, ref in zip(("train", "dev", "test"), want):
        got = SimilarityBundle.load(tmp_path / "out" / f"{name}.npz")
        for field in ("sim_i2t", "txt2img", "sim_i2i", "sim_t2t", "img_emb", "txt_emb"):
            assert torch.equal(getattr(got, field), getattr(ref, field)), (name, field)
        assert f"{name}.npz: {ref.num_images} images" in printed
        assert f"rSum {evaluate(ref)['rsum']:.2f}" in printed


def test_json_output(tmp_path, capsys):
    assert cli.main(["synthetic", str(tmp_path), *ARGS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] == 3 and report["config"]["complementarity"] == 0.5
    assert report["splits"]["dev"]["num_texts"] == 24
    assert set(report["splits"]["test"]["metrics"]) >= {"i2t_r1", "t2i_r1", "rsum"}


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    (tmp_path / "dev.npz").write_bytes(b"keep me")
    assert cli.main(["synthetic", str(tmp_path), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "dev.npz" in err and "Traceback" not in err
    assert (tmp_path / "dev.npz").read_bytes() == b"keep me"
    assert not (tmp_path / "train.npz").exists()  # nothing written when refusing
    assert cli.main(["synthetic", str(tmp_path), *ARGS, "--force"]) == 0
    assert SimilarityBundle.load(tmp_path / "dev.npz").num_images == 8


@pytest.mark.parametrize("extra,message", [
    (["--test-images", "0"], "--test-images"),
    (["--complementarity", "1.5"], "complementarity"),
    (["--seed", "-1"], "seed"),
])
def test_bad_values_fail_with_one_line(tmp_path, capsys, extra, message):
    assert cli.main(["synthetic", str(tmp_path), *ARGS, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_option_exits_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["synthetic", str(tmp_path), "--no-such-knob", "1"])
    assert exc.value.code == 2
    assert "--no-such-knob" in capsys.readouterr().err
