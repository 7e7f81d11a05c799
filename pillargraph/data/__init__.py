"""Data: similarity sources (dense or top-k neighbour lists), synthetic retrieval problems, the
real-caption proxy (whose encoders need the ``bench`` extra and are imported lazily), and the extra
positives of MS-COCO 5K (ECCV Caption, CxC; the ``eval`` extra, located lazily)."""
from .caption_proxy import ProxyEmbeddings, caption_proxy_bundle, caption_proxy_embeddings, caption_proxy_lists
from .captions import (CaptionSplit, captions_root, encode_caption_split, list_caption_splits,
                       load_caption_split, read_captions)
from .embedding_cache import EmbeddingCache
from .episodes import EpisodicSimilarity, as_episodes, mix_splits
from .partition import episode_partition
from .files import load_embeddings, load_split, npz_format
from .positives import (COCO5K_SHAPE, ECCV_CXC_KEYS, POSITIVE_SOURCES, check_coco5k_bundle, coco5k_anchor,
                        coco5k_eccv_cxc, coco5k_ids, coco5k_positives, evaluate_coco5k)
from .neighbors import BACKENDS, NeighborLists, faiss_available, topk_from_matrix, topk_neighbors
from .source import KINDS, DenseSimilarity, SimilaritySource, as_source, check_kind
from .synthetic import (SyntheticConfig, SyntheticSplit, SyntheticWorld, synthetic_embeddings,
                        synthetic_splits)
from .text_encoders import (Bm25Encoder, FittedTextEncoder, LsaEncoder, MiniLMEncoder, TextEncoder, TfidfEncoder,
                            resolve_text_encoder)

__all__ = [
    "SimilaritySource",
    "DenseSimilarity",
    "NeighborLists",
    "EpisodicSimilarity",
    "as_episodes",
    "mix_splits",
    "episode_partition",
    "load_split",
    "load_embeddings",
    "npz_format",
    "as_source",
    "check_kind",
    "KINDS",
    "topk_neighbors",
    "topk_from_matrix",
    "faiss_available",
    "BACKENDS",
    "SyntheticConfig",
    "SyntheticSplit",
    "SyntheticWorld",
    "synthetic_embeddings",
    "synthetic_splits",
    "CaptionSplit",
    "caption_proxy_bundle",
    "caption_proxy_embeddings",
    "caption_proxy_lists",
    "ProxyEmbeddings",
    "captions_root",
    "encode_caption_split",
    "list_caption_splits",
    "load_caption_split",
    "read_captions",
    "EmbeddingCache",
    "TextEncoder",
    "MiniLMEncoder",
    "FittedTextEncoder",
    "TfidfEncoder",
    "LsaEncoder",
    "Bm25Encoder",
    "resolve_text_encoder",
    "POSITIVE_SOURCES",
    "COCO5K_SHAPE",
    "coco5k_ids",
    "coco5k_positives",
    "coco5k_anchor",
    "check_coco5k_bundle",
    "evaluate_coco5k",
    "coco5k_eccv_cxc",
    "ECCV_CXC_KEYS",
]
