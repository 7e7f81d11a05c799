"""Issue 11, item 4, for the learned re-ranker: all-equal scores stay tied, and permuting the
gallery permutes the output. An untrained tiny model is enough: the checks are about how the
graphs and the write-back treat positions, not about what the model has learned."""
import torch

from pillargraph import SimilarityBundle
from pillargraph.metrics import evaluate
from pillargraph.rerank import rerank

from .helpers.tiny import tiny_builder, tiny_model

def flat_bundle(n=20, per=5):
    txt2img = torch.arange(n).repeat_interleave(per)
    full = torch.full((n, n * per), 0.5)
    return SimilarityBundle(sim_i2t=full, txt2img=txt2img, sim_i2i=torch.full((n, n), 0.5),
                            sim_t2t=torch.full((n * per, n * per), 0.5))


def _rerank(bundle):
    builder = tiny_builder()
    return rerank(tiny_model(builder), bundle, builder, fusion=1.0)


def test_all_equal_scores_stay_tied_or_pessimistic():
    out = _rerank(flat_bundle())
    assert evaluate(out)["rsum"] == 0.0  # ties are counted pessimistically: no answer handed out


def test_permuting_the_gallery_permutes_the_output(tiny_splits):
    test = tiny_splits[2]
    g = torch.Generator().manual_seed(0)
    pi = torch.randperm(test.num_images, generator=g)
    pt = torch.randperm(test.num_texts, generator=g)
    permuted = test.replace(sim_i2t=test.sim_i2t[pi][:, pt], sim_i2i=test.sim_i2i[pi][:, pi],
                            sim_t2t=test.sim_t2t[pt][:, pt], txt2img=torch.argsort(pi)[test.txt2img[pt]])
    want, got = _rerank(test), _rerank(permuted)
    torch.testing.assert_close(got.sim_i2t, want.sim_i2t[pi][:, pt], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.sim_t2i, want.sim_t2i[pt][:, pi], rtol=1e-4, atol=1e-5)
