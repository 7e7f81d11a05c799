"""Small random bundles for tests."""
import torch

from pillargraph import SimilarityBundle


def random_bundle(n=7, per=3, d=6, seed=0, dtype=torch.float64, intra=True, emb=True):
    """Embeddings with structure: each caption is a noisy copy of its image."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=dtype)
    txt2img = torch.arange(n).repeat_interleave(per)
    txt = img[txt2img] + 0.8 * torch.randn(n * per, d, generator=g, dtype=dtype)
    b = SimilarityBundle.from_embeddings(img, txt, txt2img, keep_embeddings=emb)
    if not intra:
        b = b.replace(sim_i2i=None, sim_t2t=None)
    return b


def random_score_bundle(n=12, per=3, seed=0):
    """Uniform random scores (no structure) with a shuffled caption layout, `per` captions each."""
    g = torch.Generator().manual_seed(seed)
    m = n * per
    t2i = torch.randperm(m, generator=g) % n
    # continuous random scores: no ties, so rankings are unambiguous
    return SimilarityBundle(sim_i2t=torch.rand(n, m, generator=g, dtype=torch.float64),
                            txt2img=t2i,
                            sim_i2i=torch.rand(n, n, generator=g, dtype=torch.float64),
                            sim_t2t=torch.rand(m, m, generator=g, dtype=torch.float64))
