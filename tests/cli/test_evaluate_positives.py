"""``pillargraph evaluate BUNDLE --positives eccv|cxc|FILE.npz [--json]``."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle, cli
from pillargraph.metrics import MULTI_POSITIVE_KEYS, Positives, evaluate_positives


@pytest.fixture
def small(tmp_path):
    g = torch.Generator().manual_seed(0)
    b = SimilarityBundle(sim_i2t=torch.randn(6, 12, generator=g), txt2img=torch.arange(12) // 2)
    rel = torch.rand(6, 12, generator=g) < 0.3
    pos = Positives(rel, rel.T.flip(0).T)
    return b, b.save(tmp_path / "b.npz"), pos, pos.save(tmp_path / "pos.npz")


def run(capsys, *argv):
    code = cli.main(["evaluate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_file_positives_json(small, capsys):
    b, path, pos, pos_path = small
    code, out, _ = run(capsys, path, "--positives", pos_path, "--json")
    assert code == 0
    got = json.loads(out)
    assert list(got) == list(MULTI_POSITIVE_KEYS)
    assert got == pytest.approx(evaluate_positives(b, pos))


def test_a_bundles_own_t2i_scores_are_evaluated(small, capsys, tmp_path):
    """A re-ranked bundle (with sim_t2i) ranks its caption queries by sim_t2i."""
    b, _, pos, pos_path = small
    reranked = b.replace(sim_t2i=torch.randn(12, 6, generator=torch.Generator().manual_seed(3)))
    path = reranked.save(tmp_path / "reranked.npz")
    code, out, _ = run(capsys, path, "--positives", pos_path, "--json")
    assert code == 0
    got = json.loads(out)
    assert got == pytest.approx(evaluate_positives({"i2t": b.sim_i2t, "t2i": reranked.sim_t2i.T}, pos))
    assert got["map_at_r_t2i"] != pytest.approx(evaluate_positives(b, pos)["map_at_r_t2i"])


def test_neighbour_lists_are_refused_with_one_line(small, capsys, tmp_path):
    from pillargraph.data import NeighborLists

    b, _, _, pos_path = small
    path = NeighborLists.from_bundle(b, k=4).save(tmp_path / "lists.npz")
    code, out, err = run(capsys, path, "--positives", pos_path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--positives: R-Precision and mAP@R rank every positive, which needs a dense bundle" in err


def test_file_positives_table(small, capsys):
    _, path, pos, pos_path = small
    code, out, _ = run(capsys, path, "--positives", pos_path)
    assert code == 0
    assert f"positives of {pos_path}" in out and "mAP@R" in out and "R-P" in out
    assert f"{pos.num_queries('i2t')} image and {pos.num_queries('t2i')} caption queries" in out


def test_bad_positives_are_one_line_errors(small, capsys, tmp_path):
    _, path, _, pos_path = small
    np.savez(tmp_path / "wrong.npz", i2t_rows=[0], i2t_cols=[0], t2i_rows=[0], t2i_cols=[0], shape=[3, 3])
    np.savez(tmp_path / "keys.npz", rows=[0])
    cases = [(("--positives", "coco"), "--positives: expected eccv, cxc or a .npz file, got 'coco'"),
             (("--positives", tmp_path / "none.npz"), "positives file not found"),
             (("--positives", tmp_path / "wrong.npz"), "do not match the scores' (6, 12)"),
             (("--positives", tmp_path / "keys.npz"), "unknown key(s) ['rows']"),
             (("--positives", pos_path, "--folds", "5"), "cannot be combined with --folds"),
             (("--positives", "eccv"), "neither the MS-COCO 5K test split (5000 x 25000) nor its caption "
                                       "proxy (5000 x 20000)")]
    for extra, message in cases:
        code, out, err = run(capsys, path, *extra)
        assert code == 2, extra
        assert err.count("\n") == 1 and message in err, (extra, err)
        assert out == ""
    with pytest.raises(SystemExit) as exit_:  # argparse's own one-line error
        cli.main(["evaluate", str(path), "--positives", "eccv", "--anchor", "5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "argument --anchor: invalid choice: 5" in err


def test_missing_extra_names_it(small, capsys, monkeypatch, tmp_path):
    import pillargraph.data.positives as module

    # a caption-proxy-shaped bundle, so the shape check passes and the package is asked for
    b = SimilarityBundle(sim_i2t=torch.zeros(5000, 20000, dtype=torch.float16),
                         txt2img=torch.arange(20000) // 4)
    monkeypatch.setattr(SimilarityBundle, "load", classmethod(lambda cls, path: b))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "eccv_caption" else real(name, *a))
    module._clear_caches()
    try:
        code, _, err = run(capsys, tmp_path / "proxy.npz", "--positives", "cxc")
    finally:
        module._clear_caches()
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'pillargraph[eval]'" in err


@pytest.mark.parametrize("layout", ["proxy", "full"])
def test_eccv_and_cxc_on_coco5k_bundles(layout, tmp_path, capsys):
    pytest.importorskip("eccv_caption")
    from pillargraph.data.positives import evaluate_coco5k

    per_image = 4 if layout == "proxy" else 5
    g = torch.Generator().manual_seed(1)
    # float16 keeps the file small (a 5000 x 25000 float32 bundle is 500 MB); ranks are tie-pessimistic
    b = SimilarityBundle(sim_i2t=torch.rand(5000, 5000 * per_image, generator=g).half(),
                         txt2img=torch.arange(5000 * per_image) // per_image)
    path = b.save(tmp_path / "coco.npz")
    code, out, _ = run(capsys, path, "--positives", "cxc", "--json")
    assert code == 0
    got = json.loads(out)
    assert list(got) == list(MULTI_POSITIVE_KEYS)
    want = evaluate_coco5k(b, sources=("cxc",))
    assert got == pytest.approx({k[4:]: v for k, v in want.items()})
    code, out, _ = run(capsys, path, "--positives", "eccv", "--anchor", "3")
    assert code == 0
    where = "MS-COCO 5K caption proxy, anchor 3" if layout == "proxy" else "MS-COCO 5K test"
    assert f"ECCV Caption positives ({where})" in out
    # captions in another order than 5 (or 4) consecutive per image are refused
    bad = b.replace(txt2img=b.txt2img.flip(0)).save(tmp_path / "bad.npz")
    code, _, err = run(capsys, bad, "--positives", "eccv")
    assert code == 2 and "txt2img: not the MS-COCO 5K order" in err
