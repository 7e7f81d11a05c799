"""Metrics of re-scored similarities, one matrix per direction."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Union

from torch import Tensor

from ..bundle import ArrayLike, SimilarityBundle
from ..metrics import evaluate
from .base import DIRECTIONS

__all__ = ["evaluate_rescored"]


def evaluate_rescored(scores: Mapping[str, Tensor],
                      bundle_or_txt2img: Union[SimilarityBundle, ArrayLike],
                      ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    """Metrics of a re-ranker's output, each direction from its own matrix.

    ``i2t_*`` metrics come from ``scores['i2t']`` and ``t2i_*`` metrics from
    ``scores['t2i']``; a direction the re-ranker did not produce falls back to
    the bundle's ``sim_i2t`` (so a bundle, not bare ``txt2img``, is then
    required). ``rsum`` is recomputed from the combined recalls.

    Args:
        scores: ``{'i2t': [N, M], 't2i': [N, M]}``, either key optional.
        bundle_or_txt2img: the test bundle, or its :obj:`[M]` ``txt2img``.
        ks: Recall@K cut-offs (default: ``(1, 5, 10)``).

    Returns:
        The same keys as :func:`pillargraph.evaluate`.
    """
    unknown = sorted(set(scores) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"scores: unknown direction key(s) {unknown}; expected {list(DIRECTIONS)}")
    if isinstance(bundle_or_txt2img, SimilarityBundle):
        txt2img, base = bundle_or_txt2img.txt2img, bundle_or_txt2img.sim_i2t
    else:
        txt2img, base = bundle_or_txt2img, None
    mats = {}
    for d in DIRECTIONS:
        if d in scores:
            mats[d] = scores[d]
        elif base is None:
            raise ValueError(f"scores: no {d!r} entry; pass the bundle instead of txt2img so its "
                             f"sim_i2t is used for {d}")
        else:
            mats[d] = base
    ks = tuple(ks)
    if mats["i2t"] is mats["t2i"]:
        res = {"i2t": evaluate(mats["i2t"], txt2img, ks=ks)}
        res["t2i"] = res["i2t"]
    else:
        res = {d: evaluate(mats[d], txt2img, ks=ks) for d in DIRECTIONS}
    out: Dict[str, float] = {}
    for d in DIRECTIONS:
        out.update({f"{d}_r{k}": res[d][f"{d}_r{k}"] for k in ks})
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in DIRECTIONS for k in ks)
    for d in DIRECTIONS:
        out[f"{d}_medr"] = res[d][f"{d}_medr"]
        out[f"{d}_meanr"] = res[d][f"{d}_meanr"]
    return out
