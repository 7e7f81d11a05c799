"""Issue 11, items 3 and 4: every training-free re-ranker on scaled, all-equal and permuted inputs.

- Scale: a scale-invariant method ranks scores multiplied by 1e30 exactly as
  the originals; any other method warns (its defaults assume cosines) or
  refuses with a message about the scale, never a silent wrong answer.
- Ties: on all-equal scores the result stays tied (rSum 0): captions are
  stored in image order, so breaking ties by index would hand out the answer.
- Permutation: permuting images and captions permutes the output.
"""
import warnings

import pytest
import torch

from pillargraph.baselines import QueryBank, available_rerankers, evaluate_rescored, get_reranker
from pillargraph.baselines.lists import krnn_lists
from pillargraph.data.neighbors import NeighborLists

from ..helpers.bundles import random_bundle

METHODS = available_rerankers()
#: small parameters for a 12-image gallery (the rest keep their published defaults)
PARAMS = {"nnn": dict(k=8), "krnn": dict(k1_i2t=5, k1_t2i=5), "ecn": dict(k=6),
          "gnn_rerank": dict(k1=8, k2=4), "k_reciprocal": dict(k1=6, k2=3), "diffusion": dict(k=6, kq=4)}


def bundle_and_bank(fill=None, scale=1.0):
    b = random_bundle(n=12, per=3, d=8, dtype=torch.float32, emb=False)
    g = torch.Generator().manual_seed(1)
    bank = QueryBank(bank_i2t=0.3 * torch.randn(40, b.num_texts, generator=g),
                     bank_t2i=0.3 * torch.randn(50, b.num_images, generator=g))
    mats = {"sim_i2t": b.sim_i2t, "sim_i2i": b.sim_i2i, "sim_t2t": b.sim_t2t}
    banks = {"bank_i2t": bank.bank_i2t, "bank_t2i": bank.bank_t2i}
    change = (lambda t: torch.full_like(t, fill)) if fill is not None else (lambda t: t * scale)
    return (b.replace(**{k: change(v) for k, v in mats.items()}),
            QueryBank(**{k: change(v) for k, v in banks.items()}))


def run(name, bundle, bank):
    return get_reranker(name, **PARAMS.get(name, {}))(bundle, bank=bank)


def rankings(out):
    """Each direction's ranking, as the position of every item along the query axis."""
    def ranks(x, dim):
        return torch.argsort(torch.argsort(x, dim=dim, descending=True, stable=True), dim=dim)
    return {d: ranks(s, 1 if d == "i2t" else 0) for d, s in out.items()}


@pytest.mark.parametrize("name", METHODS)
def test_scaling_by_1e30(name):
    base = rankings(run(name, *bundle_and_bank()))
    method = get_reranker(name, **PARAMS.get(name, {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scaled = rankings(method(*bundle_and_bank(scale=1e30)[:1], bank=bundle_and_bank(scale=1e30)[1]))
        except ValueError as err:
            assert not method.scale_invariant, f"{name} is scale invariant but refused: {err}"
            assert "scale" in str(err) and "cosine" in str(err), err
            assert not str(err).startswith("sim_i2t"), err
            return
    if method.scale_invariant:
        for d in base:
            assert torch.equal(scaled[d], base[d]), f"{name} ({d}) changed its ranking at 1e30"
        assert not caught, [str(w.message) for w in caught]
    else:
        assert any("scale of the scores" in str(w.message) for w in caught), name


@pytest.mark.parametrize("name", METHODS)
def test_all_equal_scores_stay_tied(name):
    bundle, bank = bundle_and_bank(fill=0.5)
    out = run(name, bundle, bank)
    for d, s in out.items():
        assert bool((s == s.flatten()[0]).all()), f"{name} ({d}) ordered all-equal scores"
    assert evaluate_rescored(out, bundle)["rsum"] == 0.0


@pytest.mark.parametrize("name", METHODS)
def test_permuting_the_gallery_permutes_the_output(name):
    bundle, bank = bundle_and_bank()
    g = torch.Generator().manual_seed(7)
    pi, pt = torch.randperm(bundle.num_images, generator=g), torch.randperm(bundle.num_texts, generator=g)
    permuted = bundle.replace(sim_i2t=bundle.sim_i2t[pi][:, pt], sim_i2i=bundle.sim_i2i[pi][:, pi],
                              sim_t2t=bundle.sim_t2t[pt][:, pt],
                              txt2img=torch.argsort(pi)[bundle.txt2img[pt]])
    pbank = QueryBank(bank_i2t=bank.bank_i2t[:, pt], bank_t2i=bank.bank_t2i[:, pi])
    want, got = run(name, bundle, bank), run(name, permuted, pbank)
    for d in want:
        torch.testing.assert_close(got[d], want[d][pi][:, pt], rtol=1e-5, atol=1e-5)


def test_krnn_at_1e30_keeps_its_recall():
    bundle, bank = bundle_and_bank()
    big, _ = bundle_and_bank(scale=1e30)
    a, b = evaluate_rescored(run("krnn", bundle, bank), bundle), evaluate_rescored(run("krnn", big, bank), big)
    assert a["rsum"] == b["rsum"] > 0


def test_krnn_on_lists_matches_dense_and_keeps_ties():
    bundle, _ = bundle_and_bank()
    lists = NeighborLists.from_bundle(bundle, bundle.num_texts)
    dense = evaluate_rescored(run("krnn", bundle, None), bundle)
    from pillargraph.metrics import evaluate_lists
    on_lists = evaluate_lists(krnn_lists(lists, 5, 5))
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"):
        assert on_lists[key] == pytest.approx(dense[key])
    flat, _ = bundle_and_bank(fill=0.5)
    assert evaluate_lists(krnn_lists(NeighborLists.from_bundle(flat, 20), 5, 5))["rsum"] == 0.0
