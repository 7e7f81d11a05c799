"""benchmarks/common.py: combo strings name every caption-proxy encoder, BM25 as the cross-modal score only."""
import pytest

from benchmarks.caption_proxy import parse_combos
from benchmarks.common import ENCODERS, parse_combo


def test_combos_name_every_encoder_and_bm25_only_as_cross():
    assert ENCODERS == ("minilm", "tfidf", "lsa", "bm25")
    assert parse_combo("bm25:minilm") == ("bm25", "minilm")
    assert parse_combo(" lsa : minilm ") == ("lsa", "minilm")
    assert parse_combos("bm25:minilm,lsa:minilm,tfidf:tfidf,tfidf:minilm,minilm:lsa,bm25:tfidf") == [
        ("bm25", "minilm"), ("lsa", "minilm"), ("tfidf", "tfidf"), ("tfidf", "minilm"), ("minilm", "lsa"),
        ("bm25", "tfidf")]
    with pytest.raises(ValueError, match=r"--combo: expected CROSS:INTRA pairs of \['minilm', 'tfidf', 'lsa', "
                                         r"'bm25'\], got 'bert:minilm'"):
        parse_combo("bert:minilm")
    with pytest.raises(ValueError, match="--combos: expected CROSS:INTRA"):
        parse_combos("minilm")
    with pytest.raises(ValueError, match="--combos: 'bm25' is a query-document scorer"):
        parse_combos("tfidf:minilm,minilm:bm25")
    with pytest.raises(ValueError, match="repeated"):
        parse_combos("lsa:minilm,lsa:minilm")
