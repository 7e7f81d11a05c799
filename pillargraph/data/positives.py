r"""Extra positives of the MS-COCO 5K test split (ECCV Caption, CxC) in pillargraph's indices.

The ``eccv-caption`` package (the ``eval`` extra: ``pip install 'pillargraph[eval]'``; ECCV
Caption, Chun et al., ECCV 2022, MIT licence) ships the caption ids of the 5K test split and, as
JSON, three sets of positives per direction: ``original`` (the COCO pairs), ``eccv`` (ECCV
Caption's machine- and human-verified positives, for a subset of the queries) and ``cxc``
(Crisscrossed Captions). Nothing is downloaded; the package is located, not imported, when
positives are first asked for.

Two index spaces are supported:

* **the 5K test split** (``anchor=None``, scores of shape 5000 x 25000): caption :math:`j` is line
  :math:`j` of ``coco_testall_caps.txt`` and id :math:`j` of ``coco_test_ids.npy``; captions
  :math:`5i .. 5i+4` belong to image :math:`i`. Two ECCV positives name captions outside the
  split; they count in :math:`R` as unreachable positives, as in the official evaluator.
* **its caption proxy** (``anchor=a``, 5000 x 20000, see
  :func:`~pillargraph.data.caption_proxy_bundle`): image :math:`i` is stood in for by its caption
  at position :math:`a`, which leaves the gallery; the texts are the other four captions of each
  image in file order (:meth:`~pillargraph.data.CaptionSplit.anchor_split`). **Positives that are
  anchors drop out**: an anchor caption is neither an i2t positive (it is not in the gallery and
  does not count in :math:`R`) nor a t2i query. ECCV and CxC numbers of the proxy are therefore not
  those of the full split, and like every caption-proxy number they are text-to-text results.

:func:`coco5k_eccv_cxc` is the one-call summary of a result in either space (ECCV mAP@R,
R-Precision and R@1, CxC R@1); :func:`evaluate_coco5k` gives every metric of chosen sources.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..bundle import ArrayLike, SimilarityBundle
from ..metrics import Positives, ScoresLike, evaluate_positives, score_matrices
from .captions import CaptionSplit

__all__ = ["POSITIVE_SOURCES", "COCO5K_SHAPE", "ECCV_CXC_KEYS", "coco5k_ids", "coco5k_positives",
           "coco5k_anchor", "check_coco5k_bundle", "evaluate_coco5k", "coco5k_eccv_cxc"]

#: Sources of positives in the ``eccv-caption`` package.
POSITIVE_SOURCES = ("original", "eccv", "cxc")
#: ``(images, captions)`` of the MS-COCO 5K test split.
COCO5K_SHAPE = (5000, 25000)
#: Keys of :func:`coco5k_eccv_cxc`'s result (all in percent).
ECCV_CXC_KEYS = ("eccv_map_at_r_i2t", "eccv_map_at_r_t2i", "eccv_rprecision_i2t", "eccv_rprecision_t2i",
                 "eccv_i2t_r1", "eccv_t2i_r1", "cxc_i2t_r1", "cxc_t2i_r1")
_PER_IMAGE = 5
_JSON = {"i2t": "{}_image_to_caption.json", "t2i": "{}_caption_to_image.json"}


def _data_dir() -> Path:
    spec = importlib.util.find_spec("eccv_caption")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("eccv_caption is not installed: install the eval extra with "
                                  "`pip install 'pillargraph[eval]'`", name="eccv_caption")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "coco_test_ids.npy").is_file():
        raise FileNotFoundError(f"eccv_caption: its data folder {folder} lacks coco_test_ids.npy; "
                                "reinstall the eval extra")
    return folder


@functools.lru_cache(maxsize=None)
def _read_json(source: str, direction: str) -> Dict[int, Tuple[int, ...]]:
    with open(_data_dir() / _JSON[direction].format(source)) as fh:
        return {int(k): tuple(int(v) for v in vs) for k, vs in json.load(fh).items()}


@functools.lru_cache(maxsize=None)
def _ids() -> Tuple[np.ndarray, np.ndarray]:
    captions = np.load(_data_dir() / "coco_test_ids.npy", allow_pickle=False).astype(np.int64)
    if captions.shape != (COCO5K_SHAPE[1],):
        raise ValueError(f"eccv_caption: coco_test_ids.npy holds {captions.shape} ids, expected "
                         f"({COCO5K_SHAPE[1]},)")
    owner = _read_json("original", "t2i")
    images = np.array([owner[int(c)][0] for c in captions], dtype=np.int64).reshape(-1, _PER_IMAGE)
    if not (images == images[:, :1]).all():
        raise ValueError("eccv_caption: 5 consecutive caption ids do not share their image")
    return images[:, 0].copy(), captions


def _clear_caches() -> None:
    """Forget what was read from the ``eccv-caption`` package (for tests that hide it)."""
    for cached in (_read_json, _ids, _pairs):
        cached.cache_clear()


def coco5k_ids() -> Tuple[np.ndarray, np.ndarray]:
    """The COCO ids of the 5K test split in pillargraph's order.

    Returns:
        ``(image_ids [5000], caption_ids [25000])``: image :math:`i` and caption :math:`j`
        (line :math:`j` of ``coco_testall_caps.txt``) of a 5000 x 25000 bundle.

    Raises:
        ModuleNotFoundError: the ``eval`` extra (``eccv-caption``) is not installed.
    """
    images, captions = _ids()
    return images.copy(), captions.copy()


@functools.lru_cache(maxsize=None)
def _pairs(source: str, direction: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image index, caption index, unreachable per query)`` of one source and direction
    (cached: the mapping walks every JSON entry; callers must not modify the arrays)."""
    images, captions = _ids()
    img_index = {int(v): i for i, v in enumerate(images)}
    cap_index = {int(v): j for j, v in enumerate(captions)}
    queries, gallery = (img_index, cap_index) if direction == "i2t" else (cap_index, img_index)
    unreachable = np.zeros(len(queries), dtype=np.int64)
    q_out, g_out = [], []
    for key, values in _read_json(source, direction).items():
        q = queries.get(key)
        if q is None:  # not a query of the 5K split (does not happen in eccv-caption 0.1.0)
            continue
        hits = [gallery[v] for v in set(values) if v in gallery]
        unreachable[q] += len(set(values)) - len(hits)
        q_out += [q] * len(hits)
        g_out += hits
    q_arr, g_arr = np.array(q_out, dtype=np.int64), np.array(g_out, dtype=np.int64)
    return (q_arr, g_arr, unreachable) if direction == "i2t" else (g_arr, q_arr, unreachable)


def _check_source(source: str) -> str:
    if source not in POSITIVE_SOURCES:
        raise ValueError(f"source: unknown source of positives {source!r}; expected one of "
                         f"{list(POSITIVE_SOURCES)}")
    return source


def coco5k_positives(source: str = "eccv", anchor: Optional[int] = None) -> Positives:
    """Positives of the MS-COCO 5K test split or of its caption proxy.

    Args:
        source: ``'eccv'`` (ECCV Caption), ``'cxc'`` (Crisscrossed Captions) or ``'original'``
            (the COCO pairs; default: ``'eccv'``).
        anchor: ``None`` for the 5K split itself (5000 x 25000), or the anchor position of its
            caption proxy (5000 x 20000; anchors drop out, see the module notes).

    Returns:
        The :class:`~pillargraph.metrics.Positives` of both directions.

    Raises:
        ModuleNotFoundError: the ``eval`` extra (``eccv-caption``) is not installed.
        ValueError: unknown source or bad anchor.
    """
    _check_source(source)
    i2t_img, i2t_cap, un_i2t = _pairs(source, "i2t")
    t2i_img, t2i_cap, un_t2i = _pairs(source, "t2i")
    un_i2t, un_t2i = un_i2t.copy(), un_t2i.copy()  # the cached arrays stay untouched
    if anchor is None:
        return Positives((i2t_img, i2t_cap), (t2i_img, t2i_cap), shape=COCO5K_SHAPE,
                         i2t_unreachable=un_i2t, t2i_unreachable=un_t2i)
    # the same anchor/text split as the caption proxy (captions are not needed for it)
    split = CaptionSplit(("",) * COCO5K_SHAPE[1], torch.arange(COCO5K_SHAPE[1]) // _PER_IMAGE)
    _, texts, _ = split.anchor_split(anchor)
    new = np.full(COCO5K_SHAPE[1], -1, dtype=np.int64)
    new[texts.numpy()] = np.arange(texts.numel())
    keep_i2t, keep_t2i = new[i2t_cap] >= 0, new[t2i_cap] >= 0
    return Positives((i2t_img[keep_i2t], new[i2t_cap[keep_i2t]]),
                     (t2i_img[keep_t2i], new[t2i_cap[keep_t2i]]),
                     shape=(COCO5K_SHAPE[0], texts.numel()), i2t_unreachable=un_i2t,
                     t2i_unreachable=un_t2i[texts.numpy()])


def coco5k_anchor(shape: Sequence[int], anchor: int = 0) -> Optional[int]:
    """Which COCO 5K index space scores of ``shape`` live in.

    Args:
        shape: ``(N, M)`` of the scores.
        anchor: the anchor position assumed for a caption proxy (default: 0; the shape cannot
            tell anchors apart).

    Returns:
        ``None`` for the 5K split (5000 x 25000), ``anchor`` for its caption proxy (5000 x 20000).

    Raises:
        ValueError: neither shape (the message names both).
    """
    shape = tuple(int(x) for x in shape)
    n, m = COCO5K_SHAPE
    if shape == (n, m):
        return None
    if shape == (n, m - n):
        return anchor
    raise ValueError(f"scores of shape {shape} are neither the MS-COCO 5K test split ({n} x {m}) nor its "
                     f"caption proxy ({n} x {m - n}); ECCV Caption and CxC positives exist only for those")


def check_coco5k_bundle(bundle: SimilarityBundle, anchor: int = 0) -> Optional[int]:
    """:func:`coco5k_anchor` of a bundle, checking that its captions are grouped as expected."""
    found = coco5k_anchor(bundle.sim_i2t.shape, anchor)
    per_image = _PER_IMAGE if found is None else _PER_IMAGE - 1
    want = torch.arange(COCO5K_SHAPE[0]).repeat_interleave(per_image)
    if not torch.equal(bundle.txt2img.cpu(), want):
        raise ValueError(f"txt2img: not the MS-COCO 5K order (captions {per_image} at a time per image, "
                         "images in file order)")
    return found


def evaluate_coco5k(scores: ScoresLike, sources: Iterable[str] = ("eccv", "cxc"), anchor: int = 0,
                    ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    """ECCV Caption and CxC metrics of MS-COCO 5K scores (the split itself or its caption proxy).

    Args:
        scores: :obj:`[N, M]` scores, a :class:`~pillargraph.SimilarityBundle`, or a re-ranked
            result ``{'i2t': [N, M], 't2i': [N, M]}`` (rows images; i2t ranked along rows, t2i
            along columns). 5000 x 25000 is the 5K split, 5000 x 20000 its caption proxy.
        sources: sources of positives (default: ``('eccv', 'cxc')``; ``'original'`` too).
        anchor: the anchor position of a caption proxy (default: 0).
        ks: R@K cut-offs (default: ``(1, 5, 10)``).

    Returns:
        For each source, :func:`~pillargraph.metrics.evaluate_positives`'s keys prefixed with
        it, in percent: e.g. ``eccv_map_at_r_i2t``, ``eccv_rprecision_t2i``, ``eccv_i2t_r1``,
        ``cxc_t2i_r1``.

    Raises:
        ModuleNotFoundError: the ``eval`` extra (``eccv-caption``) is not installed.
        ValueError: scores of another shape, or an unknown source.
    """
    mats = score_matrices(scores)
    found = coco5k_anchor(mats["i2t"].shape, anchor)
    out: Dict[str, float] = {}
    for source in sources:
        res = evaluate_positives(mats, coco5k_positives(_check_source(source), found), ks)
        out.update({f"{source}_{k}": v for k, v in res.items()})
    return out


def _check_anchor(anchor: Optional[int]) -> Optional[int]:
    if anchor is None:
        return None
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) or not 0 <= anchor < _PER_IMAGE:
        raise ValueError(f"anchor: expected None (the 5K split itself) or a caption position in "
                         f"[0, {_PER_IMAGE}), got {anchor!r}")
    return int(anchor)


def _with_t2i(scores: ScoresLike, sim_t2i: Optional[ArrayLike]) -> Dict[str, torch.Tensor]:
    """``{'i2t': [N, M], 't2i': [N, M]}`` of ``scores``, t2i from ``sim_t2i`` [M, N] when given."""
    mats = score_matrices(scores)
    if sim_t2i is None:
        return mats
    if isinstance(scores, (SimilarityBundle, Mapping)):
        raise ValueError("sim_t2i: give it with a plain i2t matrix only (a bundle or a per-direction "
                         "dict already carries its t2i scores)")
    t2i = score_matrices(sim_t2i)["i2t"]
    n, m = mats["i2t"].shape
    if tuple(t2i.shape) != (m, n):
        raise ValueError(f"sim_t2i: expected shape ({m}, {n}) (captions x images), got {tuple(t2i.shape)}")
    return {"i2t": mats["i2t"], "t2i": t2i.T}


def coco5k_eccv_cxc(scores: ScoresLike, anchor: Optional[int],
                    sim_t2i: Optional[ArrayLike] = None) -> Dict[str, float]:
    """ECCV Caption mAP@R, R-Precision and R@1, and CxC R@1, of an MS-COCO 5K test result.

    The multi-positive summary of one method on the 5K test split or, with ``anchor``, on its
    caption proxy (positives that are anchors drop out; see the module notes). Image queries
    rank along the rows of the i2t scores, caption queries along the columns of the t2i scores.

    Args:
        scores: the i2t scores, :obj:`[5000, 20000]` for the caption proxy
            (:obj:`[5000, 25000]` for the split itself), as a matrix (t2i from its transpose
            unless ``sim_t2i`` is given), a :class:`~pillargraph.SimilarityBundle` (t2i from
            :attr:`~pillargraph.SimilarityBundle.t2i_scores`), or a re-ranked result
            ``{'i2t': [N, M], 't2i': [N, M]}`` (both laid out images x captions).
        anchor: the caption position (0-4) that stood in for each image when the caption proxy
            was built (``anchor=`` of :func:`~pillargraph.data.caption_proxy_bundle`), or
            ``None`` for the 5K split itself.
        sim_t2i (optional): :obj:`[M, N]` captions x images scores that rank the images of each
            caption, with a plain i2t matrix only (e.g. a re-ranked bundle's ``sim_t2i``).

    Returns:
        A dict with the keys of :data:`ECCV_CXC_KEYS` (``eccv_map_at_r_i2t``,
        ``eccv_map_at_r_t2i``, ``eccv_rprecision_i2t``, ``eccv_rprecision_t2i``,
        ``eccv_i2t_r1``, ``eccv_t2i_r1``, ``cxc_i2t_r1``, ``cxc_t2i_r1``), in percent.

    Raises:
        ModuleNotFoundError: the ``eval`` extra (``eccv-caption``) is not installed.
        ValueError: scores whose shape is not the one ``anchor`` implies, or a bad anchor.

    Example:
        >>> res = coco5k_eccv_cxc({"i2t": reranked_i2t, "t2i": reranked_t2i}, anchor=0)
        >>> res["eccv_map_at_r_i2t"], res["cxc_t2i_r1"]
    """
    anchor = _check_anchor(anchor)
    mats = _with_t2i(scores, sim_t2i)
    n, m = COCO5K_SHAPE
    want = (n, m) if anchor is None else (n, m - n)
    if tuple(mats["i2t"].shape) != want:
        where = "the 5K split itself" if anchor is None else f"its caption proxy (anchor {anchor})"
        raise ValueError(f"scores: expected shape {want} for {where}, got {tuple(mats['i2t'].shape)}")
    eccv = evaluate_positives(mats, coco5k_positives("eccv", anchor), ks=(1,))
    cxc = evaluate_positives(mats, coco5k_positives("cxc", anchor), ks=(1,))
    res = {**{f"eccv_{k}": v for k, v in eccv.items()}, **{f"cxc_{k}": v for k, v in cxc.items()}}
    return {k: res[k] for k in ECCV_CXC_KEYS}
