import numpy as np
import pytest
import torch

from pillargraph.baselines import QueryBank
from pillargraph.baselines.base import Reranker


def test_from_embeddings_is_cosine(make_bundle):
    b = make_bundle()
    g = torch.Generator().manual_seed(3)
    bi, bt = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g,
                                                                              dtype=torch.float64)
    bank = QueryBank.from_embeddings(b, bank_img_emb=bi, bank_txt_emb=bt)
    for r in range(5):
        for c in range(b.num_texts):
            ref = float(bi[r] @ b.txt_emb[c] / (bi[r].norm() * b.txt_emb[c].norm()))
            assert abs(float(bank.bank_i2t[r, c]) - ref) < 1e-12
    assert bank.bank_t2i.shape == (4, b.num_images)
    assert bank.num_bank_images == 5 and bank.num_bank_texts == 4
    bank.validate_against(b)


def test_round_trip(tmp_path, make_bundle):
    b = make_bundle()
    bank = QueryBank(bank_i2t=np.random.rand(3, b.num_texts).astype(np.float32))
    p = bank.save(tmp_path / "bank.npz")
    assert sorted(np.load(p).files) == ["bank_i2t"]
    back = QueryBank.load(p)
    assert back.bank_t2i is None and torch.equal(back.bank_i2t, bank.bank_i2t)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    assert repr(back) == f"QueryBank(bank_i2t=(3, {b.num_texts}))"


def test_validation(tmp_path, make_bundle):
    b = make_bundle()
    with pytest.raises(ValueError, match="bank_i2t"):
        QueryBank()
    with pytest.raises(ValueError, match="non-finite"):
        QueryBank(bank_t2i=torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="float"):
        QueryBank(bank_t2i=torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D"):
        QueryBank(bank_t2i=torch.ones(3))
    with pytest.raises(ValueError, match="captions"):
        QueryBank(bank_i2t=torch.ones(2, b.num_texts + 1)).validate_against(b)
    with pytest.raises(ValueError, match="images"):
        QueryBank(bank_t2i=torch.ones(2, b.num_images + 1)).validate_against(b)
    with pytest.raises(ValueError, match="txt_emb"):
        QueryBank.from_embeddings(make_bundle(emb=False), bank_img_emb=torch.ones(2, 6))
    with pytest.raises(ValueError, match="dimension"):
        QueryBank.from_embeddings(b, bank_img_emb=torch.ones(2, 5, dtype=torch.float64))
    with pytest.raises(FileNotFoundError):
        QueryBank.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", other=np.ones((2, 2)))
    with pytest.raises(ValueError, match="unknown key"):
        QueryBank.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=".npz"):
        QueryBank(bank_i2t=torch.ones(1, 1)).save(tmp_path / "bank.txt")


def test_reranker_refuses_missing_bank_and_wrong_shape(make_bundle):
    class NeedsBank(Reranker):
        needs_bank = True
        bank_sides = ("query", "gallery")
        name = ""

        def rerank(self, view):
            return view.sim

    b = make_bundle()
    m = NeedsBank()
    m.name = "needs_bank"
    with pytest.raises(ValueError, match="bank_i2t"):
        m(b, directions="i2t")
    half = QueryBank(bank_i2t=torch.ones(2, b.num_texts, dtype=torch.float64))
    with pytest.raises(ValueError, match="bank_t2i"):  # the gallery-side bank is missing
        m(b, bank=half, directions="i2t")
    with pytest.raises(ValueError, match="captions"):
        m(b, bank=QueryBank(bank_i2t=torch.ones(2, 3)))
    full = QueryBank(bank_i2t=torch.ones(2, b.num_texts), bank_t2i=torch.ones(3, b.num_images))
    assert m(b, bank=full)["t2i"].shape == b.sim_i2t.shape
