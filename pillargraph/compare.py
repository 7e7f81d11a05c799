r"""A fair comparison of re-rankers on one test bundle.

:func:`compare` runs every requested re-ranker on the same bundle (and the
same query bank), and reports Recall@1/5/10 per direction, rSum, the change
against the base retriever, the run time and, beside every number, what the
method used beyond ``sim_i2t``: intra-modal matrices, a query bank, raw
embeddings, or all test queries at once (transductive). Methods whose inputs
are missing are listed as skipped with the reason, never silently dropped.
Scores from elsewhere (e.g. the learned re-ranker) join the table through
``extra``.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .baselines import (DIRECTIONS, QueryBank, Reranker, RetrievalView, available_rerankers,
                        evaluate_rescored, get_reranker)
from .bundle import SimilarityBundle
from .io import atomic_write_text
from .metrics import evaluate

__all__ = ["compare", "ComparisonReport", "ComparisonRow"]

_KS = (1, 5, 10)
_RECALLS = tuple(f"{d}_r{k}" for d in DIRECTIONS for k in _KS)
_FLAGS = ("intra", "bank", "embeddings", "transductive")


@dataclass
class ComparisonRow:
    """One method's line in a :class:`ComparisonReport`.

    Args:
        method (str): the method's name.
        status (str): ``'ok'``, ``'skipped'`` (inputs missing) or ``'failed'``.
        params (dict): the parameters it ran with.
        needs (dict): need flags ``intra``, ``bank``, ``embeddings``,
            ``transductive`` (``None`` where unknown, e.g. for ``extra`` scores).
        metrics (dict): :func:`~pillargraph.baselines.evaluate_rescored` output
            (empty unless ``status == 'ok'``).
        delta (dict): ``metrics`` minus the base metrics, for recalls and rSum.
        seconds (float, optional): wall-clock run time.
        reason (str): why a method was skipped or failed.
    """

    method: str
    status: str
    params: Dict[str, Any] = field(default_factory=dict)
    needs: Dict[str, Optional[bool]] = field(default_factory=dict)
    metrics: Dict[str, float] = field(default_factory=dict)
    delta: Dict[str, float] = field(default_factory=dict)
    seconds: Optional[float] = None
    reason: str = ""


def _flag(v: Optional[bool]) -> str:
    return "?" if v is None else ("yes" if v else "-")


@dataclass
class ComparisonReport:
    """The result of :func:`compare`: base metrics, one row per method, and the config.

    Args:
        base (dict): metrics of the bundle's own ``sim_i2t``.
        rows (list[ComparisonRow]): one per method, in the order run.
        config (dict): what was compared: bundle and bank shapes, device,
            methods and their parameters, library versions.
        command (str, optional): the command that produced the report, printed
            at the top of the Markdown.
    """

    base: Dict[str, float]
    rows: List[ComparisonRow]
    config: Dict[str, Any]
    command: Optional[str] = None

    def row(self, method: str) -> ComparisonRow:
        """The row of ``method`` (by its name)."""
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(f"method {method!r} is not in this report")

    @property
    def ran(self) -> List[ComparisonRow]:
        """The rows with ``status == 'ok'``."""
        return [r for r in self.rows if r.status == "ok"]

    def to_markdown(self) -> str:
        """A Markdown table, base first, then the methods; skipped ones listed below it."""
        out: List[str] = []
        if self.command:
            out += [f"Command: `{self.command}`", ""]
        b = self.config.get("bundle", {})
        bank = self.config.get("bank") or {}
        bank_text = ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in bank.items()) or "none"
        out.append(f"Test bundle: {b.get('num_images')} images x {b.get('num_texts')} captions; "
                   f"query bank: {bank_text}; device: {self.config.get('device')}.")
        out.append("")
        head = ["method", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10",
                "rSum", "Δ rSum", "time (s)", "intra", "bank", "embeddings", "transductive"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * 9 + [":---:"] * 4) + "|")
        base_cells = [f"{self.base[k]:.2f}" for k in _RECALLS] + [f"{self.base['rsum']:.2f}", "",
                                                                   ""]
        out.append("| base | " + " | ".join(base_cells + ["-"] * 4) + " |")
        for r in self.ran:
            cells = [f"{r.metrics[k]:.2f}" for k in _RECALLS]
            cells += [f"{r.metrics['rsum']:.2f}", f"{r.delta['rsum']:+.2f}",
                      "" if r.seconds is None else f"{r.seconds:.2f}"]
            cells += [_flag(r.needs.get(f)) for f in _FLAGS]
            out.append(f"| {r.method} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Flags: what a method uses beyond the test `sim_i2t`: intra-modal matrices, a "
                   "query bank (extra queries, here scored against the test gallery), raw "
                   "embeddings, or all test queries at once (transductive). Compare rows with "
                   "the same flags; others use more information.")
        others = [r for r in self.rows if r.status != "ok"]
        if others:
            out += ["", "Not run:", ""]
            out += [f"- {r.method} ({r.status}): {r.reason}" for r in others]
        return "\n".join(out) + "\n"

    def to_json(self) -> str:
        """The full report (config, base, every row with params, flags, metrics, deltas) as JSON."""
        payload = {"command": self.command, "config": self.config, "base": self.base,
                   "rows": [vars(r) for r in self.rows]}
        return json.dumps(payload, indent=2, default=str) + "\n"

    def save(self, path_md: Union[str, os.PathLike], path_json: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_markdown` and :meth:`to_json`, each atomically (temp file + rename)."""
        atomic_write_text(Path(path_md), self.to_markdown())
        atomic_write_text(Path(path_json), self.to_json())


def _missing_inputs(method: Reranker, bundle: SimilarityBundle,
                    bank: Optional[QueryBank]) -> Optional[str]:
    """Why ``method`` cannot run on these inputs, or ``None`` if it can."""
    try:
        for d in method.directions:
            method.check_inputs(RetrievalView.from_bundle(bundle, d, bank))
    except ValueError as err:
        return str(err)
    return None


def compare(bundle: SimilarityBundle, methods: Optional[Sequence[Union[str, Reranker, type]]] = None,
            bank: Optional[QueryBank] = None,
            extra: Optional[Mapping[str, Mapping[str, Tensor]]] = None,
            device: Union[str, torch.device, None] = None,
            params: Optional[Mapping[str, Mapping[str, Any]]] = None,
            extra_needs: Optional[Mapping[str, Mapping[str, bool]]] = None,
            chunk_size: Optional[int] = None) -> ComparisonReport:
    r"""Run re-rankers on one bundle and tabulate them against the base scores.

    Args:
        bundle: the test split.
        methods: names, classes or instances (default: every registered
            re-ranker). Methods that cannot run with the given inputs are
            listed as skipped, with the reason.
        bank: a query bank for the methods that need one.
        extra: more results to tabulate, ``{label: {'i2t': [N, M], 't2i': [N, M]}}``
            (e.g. the learned re-ranker's scores); a missing direction counts
            as the base scores.
        device: where to run the methods (default: the bundle's device).
        params: per-method parameter overrides, ``{name: {param: value}}``,
            for methods given by name.
        extra_needs: need flags of the ``extra`` entries,
            ``{label: {'intra': ..., 'bank': ..., 'embeddings': ..., 'transductive': ...}}``
            (unknown flags show as ``?``).
        chunk_size: passed to every method.

    Returns:
        A :class:`ComparisonReport`. A method that raises :class:`ValueError`
        or runs out of memory is recorded as ``'failed'`` with the message;
        other exceptions propagate.
    """
    if not isinstance(bundle, SimilarityBundle):
        raise ValueError(f"bundle: expected a SimilarityBundle, got {type(bundle).__name__}")
    if bank is not None and not isinstance(bank, QueryBank):
        raise ValueError(f"bank: expected a QueryBank or None, got {type(bank).__name__}")
    rerankers = _resolve_methods(methods, params)
    base = evaluate(bundle)
    rows = [_method_row(m, bundle, bank, base, device, chunk_size) for m in rerankers]
    rows += [_extra_row(label, scores, bundle, base, (extra_needs or {}).get(label, {}))
             for label, scores in (extra or {}).items()]
    return ComparisonReport(base=base, rows=rows, config=_config(bundle, bank, rows, device, chunk_size))


def _resolve_methods(methods: Optional[Sequence[Union[str, Reranker, type]]],
                     params: Optional[Mapping[str, Mapping[str, Any]]]) -> List[Reranker]:
    """The re-rankers asked for (default: all), with parameter overrides for those named."""
    params = dict(params or {})
    queries = list(available_rerankers()) if methods is None else list(methods)
    named = {q for q in queries if isinstance(q, str)}
    unused = sorted(set(params) - named)
    if unused:
        raise ValueError(f"params: no method given by the name(s) {unused}")
    return [get_reranker(q, **dict(params.get(q, {})) if isinstance(q, str) else {}) for q in queries]


def _method_row(m: Reranker, bundle: SimilarityBundle, bank: Optional[QueryBank], base: Dict[str, float],
                device: Union[str, torch.device, None], chunk_size: Optional[int]) -> ComparisonRow:
    """Run one re-ranker (or say why it was skipped or failed) and score it against ``base``."""
    row = ComparisonRow(method=m.name, status="ok", params=m.params(),
                        needs={f: m.needs()[f] for f in _FLAGS})
    reason = _missing_inputs(m, bundle, bank)
    if reason is not None:
        row.status, row.reason = "skipped", reason
        return row
    try:
        t0 = time.perf_counter()
        scores = m(bundle, bank=bank, device=device, chunk_size=chunk_size)
        if any(s.is_cuda for s in scores.values()):
            torch.cuda.synchronize()
        row.seconds = time.perf_counter() - t0
    except (ValueError, torch.cuda.OutOfMemoryError) as err:
        row.status, row.reason = "failed", f"{type(err).__name__}: {err}"
        return row
    row.metrics = evaluate_rescored(scores, bundle)
    row.delta = {k: row.metrics[k] - base[k] for k in _RECALLS + ("rsum",)}
    return row


def _extra_row(label: str, scores: Mapping[str, Tensor], bundle: SimilarityBundle, base: Dict[str, float],
               flags: Mapping[str, bool]) -> ComparisonRow:
    """A row for results computed elsewhere (e.g. the learned re-ranker), checked and scored."""
    unknown = sorted(set(scores) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"extra[{label!r}]: unknown direction key(s) {unknown}")
    for d, s in scores.items():
        if tuple(s.shape) != tuple(bundle.sim_i2t.shape):
            raise ValueError(f"extra[{label!r}][{d!r}]: expected shape "
                             f"{tuple(bundle.sim_i2t.shape)}, got {tuple(s.shape)}")
    row = ComparisonRow(method=label, status="ok", needs={f: dict(flags).get(f) for f in _FLAGS})
    row.metrics = evaluate_rescored(dict(scores), bundle)
    row.delta = {k: row.metrics[k] - base[k] for k in _RECALLS + ("rsum",)}
    return row


def _config(bundle: SimilarityBundle, bank: Optional[QueryBank], rows: List[ComparisonRow],
            device: Union[str, torch.device, None], chunk_size: Optional[int]) -> Dict[str, Any]:
    """What the comparison ran on, for the report."""
    from .version import __version__
    return {
        "bundle": {"num_images": bundle.num_images, "num_texts": bundle.num_texts,
                   "fields": [f for f in ("sim_i2i", "sim_t2t", "img_emb", "txt_emb")
                              if getattr(bundle, f) is not None]},
        "bank": None if bank is None else {k: list(getattr(bank, k).shape)
                                           for k in ("bank_i2t", "bank_t2i")
                                           if getattr(bank, k) is not None},
        "device": str(device if device is not None else bundle.device),
        "methods": [r.method for r in rows],
        "params": {r.method: r.params for r in rows},
        "chunk_size": chunk_size,
        "versions": {"pillargraph": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
