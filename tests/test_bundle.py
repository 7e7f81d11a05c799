import os

import numpy as np
import pytest
import torch

from pillargraph import SimilarityBundle


def make(n=6, per=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g)
    txt = torch.randn(n * per, d, generator=g)
    return SimilarityBundle.from_embeddings(img, txt, torch.arange(n).repeat_interleave(per))


def test_from_embeddings_is_cosine():
    b = make()
    assert b.num_images == 6 and b.num_texts == 12
    assert torch.allclose(b.sim_i2i.diagonal(), torch.ones(6), atol=1e-6)
    img = torch.nn.functional.normalize(b.img_emb, dim=1)
    txt = torch.nn.functional.normalize(b.txt_emb, dim=1)
    assert torch.allclose(b.sim_i2t, img @ txt.T, atol=1e-6)
    assert torch.equal(b.t2i_scores, b.sim_i2t.T) and b.sim_t2i is None
    assert b.has_intra


def test_round_trip(tmp_path):
    b = make()
    path = b.save(tmp_path / "b.npz")
    with np.load(path) as data:
        assert sorted(data.files) == sorted(["sim_i2t", "txt2img", "sim_i2i", "sim_t2t",
                                             "img_emb", "txt_emb"])
    c = SimilarityBundle.load(path)
    for name in ("sim_i2t", "txt2img", "sim_i2i", "sim_t2t", "img_emb", "txt_emb"):
        assert torch.equal(getattr(b, name), getattr(c, name))
    # only the bundle file is left behind: no temporary files
    assert os.listdir(tmp_path) == ["b.npz"]


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    b = make()
    path = b.save(tmp_path / "b.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        make(seed=1).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["b.npz"]


def test_second_order_intra():
    b = make()
    bare = SimilarityBundle(b.sim_i2t, b.txt2img)
    assert not bare.has_intra
    filled = bare.with_second_order_intra()
    s = b.sim_i2t - b.sim_i2t.mean(1, keepdim=True)
    rows = torch.nn.functional.normalize(s, dim=1)
    assert torch.allclose(filled.sim_i2i, rows @ rows.T, atol=1e-6)
    assert filled.sim_t2t.shape == (12, 12)
    # present matrices are kept unless overwrite=True
    kept = b.with_second_order_intra()
    assert kept.sim_i2i is b.sim_i2i


def test_subset():
    b = make(n=5, per=3)
    sub = b.subset([3, 1])
    assert sub.num_images == 2 and sub.num_texts == 6
    assert torch.equal(sub.txt2img, torch.tensor([1, 1, 1, 0, 0, 0]))
    assert torch.equal(sub.sim_i2t[0], b.sim_i2t[3, [3, 4, 5, 9, 10, 11]])


@pytest.mark.parametrize("field,value,msg", [
    ("sim_i2t", np.zeros(4), "sim_i2t: expected shape"),
    ("sim_i2t", np.zeros((2, 4), dtype=np.int64), "sim_i2t: expected a float dtype"),
    ("sim_i2t", np.array([[0.0, np.nan, 0, 0], [0, 0, 0, 0]]), "sim_i2t: contains 1 non-finite"),
    ("sim_i2t", np.array([[0.0, np.inf, 0, 0], [0, 0, 0, 0]]), "sim_i2t: contains 1 non-finite"),
    ("txt2img", np.array([0, 0, 1]), r"txt2img: expected shape \(4,\)"),
    ("txt2img", np.array([0, 0, 1, 2]), "txt2img: values must lie in"),
    ("txt2img", np.array([0, 0, 0, 0]), "txt2img: 1 image"),
    ("txt2img", np.array([0.0, 0, 1, 1]), "txt2img: expected an integer dtype"),
    ("sim_i2i", np.zeros((3, 3)), "sim_i2i: expected shape"),
    ("sim_t2t", np.zeros((4, 3)), "sim_t2t: expected shape"),
    ("sim_t2t", np.full((4, 4), np.nan), "sim_t2t: contains"),
    ("img_emb", np.zeros((3, 2)), "img_emb: expected shape"),
    ("txt_emb", np.zeros((4, 3)), "txt_emb: dimension 3 differs"),
])
def test_validation(field, value, msg):
    good = dict(sim_i2t=np.zeros((2, 4)), txt2img=np.array([0, 0, 1, 1]),
                sim_i2i=np.zeros((2, 2)), sim_t2t=np.zeros((4, 4)),
                img_emb=np.zeros((2, 2)), txt_emb=np.zeros((4, 2)))
    SimilarityBundle(**good)
    good[field] = value
    with pytest.raises(ValueError, match=msg):
        SimilarityBundle(**good)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        SimilarityBundle.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "extra.npz", sim_i2t=np.zeros((1, 1)), txt2img=np.zeros(1, int), junk=np.ones(1))
    with pytest.raises(ValueError, match="unknown key"):
        SimilarityBundle.load(tmp_path / "extra.npz")
    np.savez(tmp_path / "noi2t.npz", txt2img=np.zeros(1, int))
    with pytest.raises(ValueError, match="missing required key 'sim_i2t'"):
        SimilarityBundle.load(tmp_path / "noi2t.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .npz bundle"):
        SimilarityBundle.load(tmp_path / "garbage.npz")
    with pytest.raises(ValueError, match="npz"):
        SimilarityBundle(np.zeros((1, 1)), np.zeros(1, int)).save(tmp_path / "x.txt")
