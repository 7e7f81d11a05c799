r"""Sharded re-ranking: split a split's queries over workers, then merge their parts.

A worker re-ranks shard ``I`` of ``N`` (``I`` counted from 1) with
:func:`rerank_shard`: a contiguous slice of each direction's queries (image
queries for ``i2t``, caption queries for ``t2i``). It builds and scores only
those queries' graphs and keeps their **raw learned scores** in a
:class:`ShardPart`, not a re-scored matrix: the ``'fused'`` output averages the
two directions' write-backs, so the rows of one shard depend on the columns
re-scored by the others, and only the complete set of learned scores determines
the result. :func:`merge_parts` checks that the parts are exactly the ``N``
shards of one run (same checkpoint, split, fusion weights and output mode) and
hands the concatenated scores to :func:`~pillargraph.rerank.combine_any`, the
function :func:`~pillargraph.rerank.rerank` ends with, so the merge equals the
unsharded result for every output mode of :data:`~pillargraph.rerank.OUTPUTS`.

**Exactness.** Shards are cut on multiples of the scoring batch size
(:func:`shard_range`), so every shard runs exactly the forward passes the
unsharded run makes for its queries: the merged result is bit-for-bit the
unsharded one (same batch size, same device type), even where a kernel's
rounding depends on the batch shape.

**Identity of the inputs.** A part records a :func:`file_fingerprint` (size
and SHA-256) of the checkpoint and of the split file; parts made from other
inputs cannot be merged, nor merged into another split.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .data.files import npz_format
from .data.sharding import (ShardLike, check_shard_set, file_fingerprint, parse_shard, part_names,
                             shard_from_env, shard_range)
from .graphs.batch import GraphBatch
from .graphs.builder import PillarGraphBuilder
from .graphs.dataset import QueryGraphDataset
from .io import atomic_write, read_npz
from .modality import DIRECTIONS, gallery_modality, query_modality
from .rerank import Scored, Split, combine_any, model_builder, rerank_scores, resolve_fusion

__all__ = ["ShardPart", "ShardScores", "ShardLike", "parse_shard", "shard_from_env", "shard_range",
           "file_fingerprint", "check_shard_set", "rerank_shard", "check_parts", "check_fingerprint",
           "merge_scores", "merge_parts", "part_names", "PART_FORMAT"]

#: Written into every part file; :meth:`ShardPart.load` refuses other formats.
PART_FORMAT = "pillargraph-rerank-part/1"

_ARRAYS = ("node_type", "candidate_mask", "node_index", "base_score", "learned")
_KEYS = ("meta",) + tuple(f"{d}_{a}" for d in DIRECTIONS for a in _ARRAYS)


@dataclass
class ShardScores:
    """One direction's share of a shard: its queries ``[start, stop)`` and their learned scores.

    Args:
        start, stop: the queries of the shard (in the direction's query modality).
        node_type, candidate_mask: :obj:`[K]` layout of the direction's graphs.
        node_index: :obj:`[Q, K]` node ids of each query's graph.
        base_score: :obj:`[Q, K]` base scores of the nodes.
        learned: :obj:`[Q, K]` learned scores (:func:`~pillargraph.rerank.score_graphs`).
    """

    start: int
    stop: int
    node_type: Tensor
    candidate_mask: Tensor
    node_index: Tensor
    base_score: Tensor
    learned: Tensor

    def check(self, direction: str, num_queries: Mapping[str, int]) -> None:
        """Check that the arrays fit one another, the query range and the split's sizes.

        Args:
            direction: the direction these scores belong to.
            num_queries: ``{direction: queries of the whole split}`` (images for
                ``'i2t'``, captions for ``'t2i'``), which bound the node ids.

        Raises:
            ValueError: one line naming the array that does not fit (a damaged part).
        """
        q, k = self.stop - self.start, self.node_type.numel()
        if not 0 <= self.start <= self.stop <= num_queries[direction]:
            raise ValueError(f"{direction}: queries [{self.start}, {self.stop}) outside the split's "
                             f"{num_queries[direction]}")
        gallery = gallery_modality(direction)
        if (self.node_type.dim() != 1 or self.node_type.is_floating_point() or k < 2
                or tuple(self.candidate_mask.shape) != (k,) or self.candidate_mask.dtype != torch.bool
                or int(self.node_type[0]) != query_modality(direction)
                or not bool((self.node_type[self.candidate_mask] == gallery).all())):
            raise ValueError(f"{direction}_node_type, {direction}_candidate_mask: not the layout of a "
                             f"{direction} graph")
        for name in ("node_index", "base_score", "learned"):
            shape = tuple(getattr(self, name).shape)
            if shape != (q, k):
                raise ValueError(f"{direction}_{name}: expected shape {(q, k)} (queries [{self.start}, "
                                 f"{self.stop}) x {k} nodes), got {shape}")
        index = self.node_index
        sizes = torch.tensor([num_queries["i2t"], num_queries["t2i"]])[self.node_type.long()]  # images, captions
        if index.is_floating_point() or bool(((index < 0) | (index >= sizes)).any()) or \
                not torch.equal(index[:, 0], torch.arange(self.start, self.stop)):
            raise ValueError(f"{direction}_node_index: node ids out of range or not the shard's queries")
        for name in ("base_score", "learned"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(f"{direction}_{name}: holds non-finite values")

    def graphs(self, direction: str) -> GraphBatch:
        """The scored graphs' layout and node ids as a :class:`GraphBatch` without features.

        ``x`` has no feature columns and ``adj`` is a broadcast zero: enough for
        the write-back, which reads only the layout, the query and node ids.
        """
        q, k = self.node_index.shape
        return GraphBatch(direction, torch.zeros(q, k, 0), torch.zeros(()).expand(q, k, k), self.node_type,
                          self.candidate_mask, torch.arange(self.start, self.stop), self.node_index,
                          self.base_score)


@dataclass
class ShardPart:
    """What one worker's :func:`rerank_shard` produced (see the module docstring).

    Args:
        index, count: shard ``index`` (from 1) of ``count``.
        num_queries: ``{direction: queries of the whole split}``.
        scores: ``{direction: ShardScores}``.
        fusion: ``(w_i2t, w_t2i)`` used for the write-back.
        output: the output mode (:data:`~pillargraph.rerank.OUTPUTS`).
        batch_size: graphs per forward pass (shard boundaries are its multiples).
        inputs: ``{'checkpoint': fingerprint, 'split': fingerprint}`` (see :func:`file_fingerprint`).
        split_path: where the split was read from (the merge's default split).
        source: the file the part was loaded from (not saved; for messages).
    """

    index: int
    count: int
    num_queries: Dict[str, int]
    scores: Dict[str, ShardScores]
    fusion: Tuple[float, float]
    output: str
    batch_size: int
    inputs: Dict[str, Any] = field(default_factory=dict)
    split_path: Optional[str] = None
    source: Optional[str] = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The part's file name, or ``'shard I/N'`` for a part not read from a file."""
        return self.source if self.source is not None else f"shard {self.index}/{self.count}"

    def ranges(self) -> Dict[str, Tuple[int, int]]:
        """``{direction: (start, stop)}`` of the shard's queries."""
        return {d: (s.start, s.stop) for d, s in self.scores.items()}

    def meta(self) -> Dict[str, Any]:
        """Everything but the arrays, JSON-friendly (what :meth:`save` writes as ``meta``)."""
        return {"format": PART_FORMAT, "shard": self.index, "count": self.count,
                "num_queries": dict(self.num_queries), "ranges": {d: list(r) for d, r in self.ranges().items()},
                "fusion": list(self.fusion), "output": self.output, "batch_size": self.batch_size,
                "inputs": self.inputs, "split_path": self.split_path}

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the part to ``path`` (an uncompressed ``.npz`` of plain arrays, atomically)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
        arrays = {"meta": np.array(json.dumps(self.meta(), sort_keys=True))}
        for d, s in self.scores.items():
            arrays.update({f"{d}_{a}": getattr(s, a).detach().cpu().numpy() for a in _ARRAYS})
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ShardPart":
        """Read a part written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a part file (the message names the file).
        """
        kind = npz_format(path)
        if kind not in (None, "rerank-part"):
            what = {"bundle": "a bundle", "lists": "neighbour lists",
                    "lists-part": "a neighbour-list part"}.get(kind, kind)
            raise ValueError(f"{path}: holds {what}, not a re-ranking part (parts are written by "
                             f"`pillargraph rerank --shard I/N`)")
        arrays = read_npz(path, "re-ranking part", _KEYS, required=_KEYS)
        try:
            meta = json.loads(str(arrays["meta"][()]))
            if meta.get("format") != PART_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            scores = {d: ShardScores(*(int(v) for v in meta["ranges"][d]),
                                     **{a: torch.from_numpy(arrays[f"{d}_{a}"]) for a in _ARRAYS})
                      for d in DIRECTIONS}
            num_queries = {d: int(meta["num_queries"][d]) for d in DIRECTIONS}
            for d in DIRECTIONS:
                scores[d].check(d, num_queries)
            return cls(int(meta["shard"]), int(meta["count"]), num_queries,
                       scores, tuple(float(w) for w in meta["fusion"]), str(meta["output"]),
                       int(meta["batch_size"]), dict(meta["inputs"]), meta.get("split_path"), str(path))
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path}: not a pillargraph re-ranking part ({PART_FORMAT}): {err}") from None


def rerank_shard(model: torch.nn.Module, split: Split, index: int, count: int, *,
                 builder: Optional[PillarGraphBuilder] = None, fusion: Any = None, output: Optional[str] = None,
                 batch_size: int = 1024, device: Union[str, torch.device, None] = None,
                 inputs: Optional[Dict[str, Any]] = None, split_path: Optional[str] = None) -> ShardPart:
    """Score shard ``index`` (from 1) of ``count`` of ``split``'s queries, in both directions.

    Takes the arguments of :func:`~pillargraph.rerank.rerank`; :func:`merge_parts`
    of the ``count`` parts equals ``rerank(model, split, builder, fusion=fusion,
    output=output, batch_size=batch_size)``.

    Args:
        model: a trained :class:`~pillargraph.nn.PillarReranker`.
        split: the whole split (graphs of the shard's queries read all of it).
        index, count: which shard.
        builder: the training graph builder (default: from ``model.builder_config``).
        fusion, output: as for :func:`~pillargraph.rerank.rerank` (resolved now and recorded).
        batch_size: graphs per forward pass; shards are cut on its multiples.
        device: where the model runs.
        inputs: fingerprints of the input files to record (see :func:`file_fingerprint`).
        split_path: the split's file, recorded as the merge's default split.
    """
    w_i2t, w_t2i, output = resolve_fusion(model, fusion, output)
    builder = builder if builder is not None else model_builder(model)
    num_queries = {"i2t": split.num_images, "t2i": split.num_texts}
    ranges = {d: shard_range(num_queries[d], index, count, batch_size) for d in DIRECTIONS}
    graphs = {d: builder.build(split, d, torch.arange(*ranges[d])) for d in DIRECTIONS}
    scored = rerank_scores(model, split, builder, graphs, batch_size=batch_size, device=device)
    scores = {}
    for d, (ds, learned) in scored.items():
        g = ds.graphs
        scores[d] = ShardScores(*ranges[d], g.node_type.cpu(), g.candidate_mask.cpu(), g.node_index.cpu(),
                                g.base_score.cpu(), learned.cpu())
    return ShardPart(index, count, num_queries, scores, (w_i2t, w_t2i), output, batch_size,
                     dict(inputs or {}), split_path)


def _settings(part: ShardPart) -> Dict[str, Any]:
    """What every part of one run must share."""
    layout = {d: (s.node_type.tolist(), s.candidate_mask.tolist()) for d, s in part.scores.items()}
    return {"shard count": part.count, "input files": part.inputs, "query counts": part.num_queries,
            "fusion weights": part.fusion, "output mode": part.output, "batch size": part.batch_size,
            "graph layouts": layout}


def check_parts(parts: Sequence[ShardPart]) -> List[ShardPart]:
    """The re-ranking parts in shard order, after checking that they are exactly the ``N`` shards of one run.

    Raises:
        ValueError: one line naming the problem (see :func:`check_shard_set`):
            parts of different runs (count, input fingerprints, fusion, output
            or batch size), a repeated or missing shard, or damaged query ranges.
    """
    def expected(p: ShardPart) -> Dict[str, Tuple[int, int]]:
        return {d: shard_range(p.num_queries[d], p.index, p.count, p.batch_size) for d in DIRECTIONS}
    return check_shard_set(parts, _settings, expected)


def check_fingerprint(parts: Sequence[ShardPart], split_path: Union[str, os.PathLike]) -> None:
    """Check that ``split_path`` is the split file the parts were made from (when they recorded one).

    Raises:
        ValueError: its size or SHA-256 differs from the recorded fingerprint.
    """
    recorded = parts[0].inputs.get("split") if parts else None
    if recorded is None:
        return
    if file_fingerprint(split_path) != recorded:
        raise ValueError(f"{split_path}: not the split the parts were made from (its size or SHA-256 differs "
                         f"from the fingerprint recorded in {parts[0].name})")


def merge_scores(parts: Sequence[ShardPart]) -> Scored:
    """The checked parts' learned scores, concatenated: :func:`~pillargraph.rerank.rerank_scores`' result."""
    parts = check_parts(parts)
    scored = {}
    for d in DIRECTIONS:
        pieces = [p.scores[d] for p in parts]
        whole = ShardScores(0, parts[0].num_queries[d], pieces[0].node_type, pieces[0].candidate_mask,
                            *(torch.cat([getattr(s, a) for s in pieces]) for a in _ARRAYS[2:]))
        scored[d] = (QueryGraphDataset(whole.graphs(d)), whole.learned)
    return scored


def merge_parts(parts: Sequence[ShardPart], split: Split) -> Split:
    """The re-ranked ``split`` assembled from all its shards' parts.

    The result is what the unsharded :func:`~pillargraph.rerank.rerank` returns.

    Args:
        parts: the ``N`` parts, in any order.
        split: the split the parts were made from (the write-back starts from
            its base scores).

    Raises:
        ValueError: the parts are not the ``N`` shards of one run (:func:`check_parts`),
            or do not fit ``split``'s size.
    """
    parts = check_parts(parts)
    sizes = {"i2t": split.num_images, "t2i": split.num_texts}
    if sizes != parts[0].num_queries:
        raise ValueError(f"split: has {sizes['i2t']} images and {sizes['t2i']} captions, the parts "
                         f"({part_names(parts)}) were made from {parts[0].num_queries['i2t']} and "
                         f"{parts[0].num_queries['t2i']}")
    w_i2t, w_t2i = parts[0].fusion
    try:
        return combine_any(split, merge_scores(parts), w_i2t, w_t2i, parts[0].output)
    except ValueError as err:  # e.g. candidates that are not the split's lists: a part was altered
        raise ValueError(f"{part_names(parts)}: {err}") from None
