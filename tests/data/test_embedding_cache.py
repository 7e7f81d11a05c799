import os
import warnings

import numpy as np
import pytest
import scipy.sparse

from pillargraph.data.embedding_cache import (EmbeddingCache, default_cache_dir, embedding_cache_key,
                                              texts_hash)


class CountingEncoder:
    name = "count"

    def __init__(self, scale=1.0):
        self.scale = scale
        self.calls = 0

    def settings(self):
        return {"scale": self.scale}

    def encode(self, texts):
        self.calls += 1
        return np.array([[len(t) * self.scale, 1.0] for t in texts], dtype=np.float32)


def test_texts_hash_is_order_and_boundary_sensitive():
    assert texts_hash(["a", "b"]) == texts_hash(["a", "b"])
    assert texts_hash(["a", "b"]) != texts_hash(["b", "a"])
    assert texts_hash(["ab", "c"]) != texts_hash(["a", "bc"])
    assert texts_hash(["a\nb"]) != texts_hash(["a", "b"])
    with pytest.raises(ValueError, match="texts"):
        texts_hash("abc")
    with pytest.raises(ValueError, match="item 1"):
        texts_hash(["a", 3])


def test_key_depends_on_content_encoder_and_settings_not_their_order():
    h = texts_hash(["x"])
    k = embedding_cache_key(h, "minilm", {"a": 1, "b": [1, 2]})
    assert k == embedding_cache_key(h, "minilm", {"b": [1, 2], "a": 1})
    assert k != embedding_cache_key(texts_hash(["y"]), "minilm", {"a": 1, "b": [1, 2]})
    assert k != embedding_cache_key(h, "tfidf", {"a": 1, "b": [1, 2]})
    assert k != embedding_cache_key(h, "minilm", {"a": 2, "b": [1, 2]})
    assert len(k) == 64 and int(k, 16) >= 0
    with pytest.raises(ValueError, match="settings"):
        embedding_cache_key(h, "minilm", {"a": object()})
    with pytest.raises(ValueError, match="content_hash"):
        embedding_cache_key("", "minilm", {})


def test_default_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PILLARGRAPH_CACHE", str(tmp_path / "pg"))
    assert default_cache_dir() == tmp_path / "pg"
    monkeypatch.delenv("PILLARGRAPH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pillargraph"
    assert EmbeddingCache().root == tmp_path / "xdg" / "pillargraph" / "embeddings"


def test_save_load_round_trip_dense_and_sparse(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    key = "ab" * 32
    dense = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    path = cache.save(key, dense, "enc")
    assert path.name == f"enc-{key}.npy"
    np.testing.assert_array_equal(cache.load(key, "enc", rows=5), dense)
    assert sorted(os.listdir(tmp_path / "c")) == [path.name]  # no temporary file left behind

    sp = scipy.sparse.random(4, 7, density=0.3, format="csr", dtype=np.float32, random_state=1)
    path = cache.save(key, sp, "enc")  # replaces the dense file of the same key
    assert path.suffix == ".npz"
    got = cache.load(key, "enc", rows=4)
    assert scipy.sparse.issparse(got) and (got != sp).nnz == 0
    assert sorted(os.listdir(tmp_path / "c")) == [path.name]


def test_load_ignores_missing_wrong_and_corrupt_files(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = "cd" * 32
    assert cache.load(key) is None
    cache.save(key, np.ones((3, 2), np.float32))
    with pytest.warns(UserWarning, match="expected 4 rows"):
        assert cache.load(key, rows=4) is None
    cache.path(key).write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.load(key) is None
    with pytest.raises(ValueError, match="key"):
        cache.path("../escape")
    with pytest.raises(ValueError, match="array"):
        cache.save(key, np.ones(3))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    key = "ef" * 32
    old = np.zeros((2, 2), np.float32)
    cache.save(key, old)

    def broken_save(fh, array, allow_pickle=False):
        fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save(key, np.ones((2, 2), np.float32))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [cache.path(key).name]
    np.testing.assert_array_equal(cache.load(key), old)


def test_encode_computes_once_then_reads(tmp_path):
    enc = CountingEncoder()
    texts = ["a", "bbb", "cc"]
    first = EmbeddingCache(tmp_path).encode(enc, texts)
    again = EmbeddingCache(tmp_path).encode(enc, texts)
    assert enc.calls == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[:, 0], [1, 3, 2])
    # other settings or other texts miss the cache
    other = CountingEncoder(scale=2.0)
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).encode(other, texts)[:, 0], [2, 6, 4])
    EmbeddingCache(tmp_path).encode(enc, texts[:2])
    assert enc.calls == 2 and other.calls == 1
    # a corrupt entry is recomputed and rewritten
    for p in tmp_path.iterdir():
        p.write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(EmbeddingCache(tmp_path).encode(enc, texts), first)
    assert enc.calls == 3


class DotEncoder(CountingEncoder):
    """A query-document scorer stand-in: queries and documents are encoded differently."""
    name = "dotty"
    similarity = "dot"

    def encode_queries(self, texts):
        self.calls += 1
        return np.array([[1.0, len(t)] for t in texts], dtype=np.float32)


def test_query_side_has_its_own_key_only_for_dot_scorers(tmp_path):
    texts = ["a", "bbb"]
    dot = DotEncoder()
    docs = EmbeddingCache(tmp_path).encode(dot, texts)
    queries = EmbeddingCache(tmp_path).encode(dot, texts, queries=True)
    np.testing.assert_array_equal(queries, [[1, 1], [1, 3]])
    assert not np.array_equal(docs, queries) and dot.calls == 2
    EmbeddingCache(tmp_path).encode(dot, texts, queries=True)
    assert dot.calls == 2  # read back from its own file
    key = embedding_cache_key(texts_hash(texts), "dotty", {"scale": 1.0})
    query_key = embedding_cache_key(texts_hash(texts), "dotty", {"scale": 1.0, "side": "query"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"dotty-{key}.npy", f"dotty-query-{query_key}.npy"]
    cos = CountingEncoder()  # no query side: one file, one call
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).encode(cos, texts, queries=True),
                                  EmbeddingCache(tmp_path).encode(cos, texts))
    assert cos.calls == 1 and len(list(tmp_path.glob("count-*"))) == 1
