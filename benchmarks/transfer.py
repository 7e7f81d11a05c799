"""Transferability: a re-ranker trained on one base scorer's scores re-ranks another's, without retraining.

For every recipe (``--recipes``) and every combo ``A`` of ``--combos`` a model is
trained on the Flickr30K-train caption proxy of ``A`` (its first
``--train-images`` images; epoch and fusion chosen on ``A``'s Flickr30K dev, as
``caption_proxy.py --protocols f30k`` trains it) or loaded from ``--models DIR``
(``caption_proxy.py --save-models DIR``). Then, for every ordered pair ``(A, B)``,
``A``'s model re-ranks ``B``'s Flickr30K test split: the graphs and their features
(pillars, ranks, training-free priors) are computed from ``B``'s own scores; only
the weights come from ``A``. Two settings:

* ``target dev``: the base fusion (weights and output mode) re-selected on ``B``'s
  Flickr30K dev split (a little target data);
* ``own fusion``: ``A``'s own dev-selected fusion (no target data).

Cells are the rSum gain over ``B``'s base on Flickr30K test (mean over
``--seeds``); the diagonal is in-domain. The summary line per table says whether
every off-diagonal cell is above ``B``'s base and gives the mean off-diagonal gain
as a percentage of the mean in-domain gain (the issue's targets: all above, at
least 70%). Writes ``OUT.md`` (command first), ``OUT.json`` (config and every
number) and ``OUT.png`` (heat maps, one panel per setting, one row per recipe),
each atomically.

Time: at the defaults (one thread per job on the 2-core machine, shared with other
jobs; 5 combos, 3 recipes, seed 0, 3,000 training images, each recipe's 3
epochs) about 80 minutes, of which about 60 train the 15 models (none when
``--models`` holds them) and 20 re-rank the 75 cells (about 15 s a cell; a
transductive one about 25 s, its priors recomputed on the target's splits).
With the models of the generalization runs (``--models``) and 3 seeds: about 50
minutes for the 225 cells.

    python benchmarks/transfer.py [--combos tfidf:minilm,minilm:minilm,bm25:minilm,lsa:minilm,tfidf:tfidf]
        [--recipes paper,inductive,transductive] [--seeds 0] [--train-images 3000] [--epochs N]
        [--models DIR] [--limit N] [--out benchmarks/results/transfer]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph.bundle import SimilarityBundle
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.metrics import evaluate
from pillargraph.modality import DIRECTIONS
from pillargraph.nn import PillarReranker
from pillargraph.rerank import combine_any, fusion_for_output, model_builder, rerank_scores, select_fusion_weights
from pillargraph.train import TrainConfig, fit_reranker

from benchmarks.common import (PROXY_NOTE, ProxyTrain, claim_model_dir, command_line, f30k_split, load_finished, log,
                               mean_std, parse_combo, parse_list, peak_rss_gib, portable_file, recipe_for,
                               save_figure, write_results)

DEFAULT_COMBOS = "tfidf:minilm,minilm:minilm,bm25:minilm,lsa:minilm,tfidf:tfidf"
#: The two settings: where the fusion with the base comes from.
SETTINGS = {"target_dev": "fusion re-selected on the target's dev", "own": "the source model's own fusion"}


@dataclass
class Source:
    """One trained model of a source combo: the model, its builder, its own dev-selected fusion and output modes,
    and how it was obtained (trained here or loaded)."""

    model: PillarReranker
    builder: PillarGraphBuilder
    fusion: Dict[str, Any]
    outputs: Tuple[str, ...]
    info: Dict[str, Any]


class Target:
    """One combo's Flickr30K dev and test bundles (cut to ``limit`` images), its base test rSum, and the graphs of
    each builder setting, built once from its own scores and shared by every source model."""

    def __init__(self, combo: str, limit: Optional[int]) -> None:
        self.combo = combo
        self.splits = {s: f30k_split(combo, s, limit) for s in ("dev", "test")}
        self.base_rsum = evaluate(self.splits["test"])["rsum"]
        self._graphs: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def graphs(self, split: str, builder: PillarGraphBuilder) -> Dict[str, Any]:
        """Both directions' graphs of ``split`` under ``builder``'s settings (built on first use)."""
        key = (split, json.dumps(builder.config, sort_keys=True, default=str))
        if key not in self._graphs:
            self._graphs[key] = {d: builder.build(self.splits[split], d) for d in DIRECTIONS}
        return self._graphs[key]


def claim_models(combo: str, dev: SimilarityBundle, args) -> Tuple[ProxyTrain, Dict[Tuple[str, int], Optional[Path]]]:
    """``combo``'s training split and the ``--models`` run folder of every recipe and seed (``None`` without
    ``--models``); ValueError naming ``--models`` when a folder holds a model of another run."""
    proxy = ProxyTrain(combo, args.train_images, args.train_form, args.lists_k)
    paths: Dict[Tuple[str, int], Optional[Path]] = {}
    for name in args.recipes:
        recipe = recipe_for(name, args.epochs)
        for seed in args.seeds:
            info = proxy.model_info(name, recipe, seed, dev.num_images)
            paths[(name, seed)] = claim_model_dir(args.models, combo, name, seed, info, "--models") if args.models \
                else None
    return proxy, paths


def source_models(combo: str, dev: SimilarityBundle, args) -> Dict[Tuple[str, int], Source]:
    """Every recipe and seed's model of ``combo``: loaded from a finished run in ``--models``, else trained (and
    kept there when ``--models`` is given)."""
    proxy, paths = claim_models(combo, dev, args)
    out = {}
    for name in args.recipes:
        recipe = recipe_for(name, args.epochs)
        for seed in args.seeds:
            path = paths[(name, seed)]
            loaded = load_finished(path) if path is not None else None
            if loaded is not None:
                model, state = loaded
                out[(name, seed)] = Source(model, model_builder(model), dict(state["fusion"]),
                                           TrainConfig.from_dict(state["train_config"]).fusion_outputs,
                                           {"loaded": portable_file(path),
                                            "best_dev_rsum": state["best"]["rsum"]})
            else:
                t0 = time.perf_counter()
                fitted = fit_reranker(proxy.train_for(recipe), dev, recipe=recipe, seed=seed, out_dir=path,
                                      episode_seed=proxy.episode_seed)
                out[(name, seed)] = Source(fitted.model, fitted.builder, dict(fitted.result.fusion),
                                           fitted.config.fusion_outputs,
                                           {"trained_s": round(time.perf_counter() - t0, 1),
                                            "best_dev_rsum": fitted.result.best_dev_rsum, "saved": str(path or "")})
            f = out[(name, seed)].fusion
            log(f"  {combo} {name} seed {seed}: {out[(name, seed)].info}, fusion {f['output']} {f['i2t']}/{f['t2i']}")
    return out


def cell(source: Source, target: Target) -> Dict[str, Any]:
    """Target test rSum of the source model: learned scores alone, own fusion, fusion selected on target dev."""
    b, m = source.builder, source.model
    chosen = select_fusion_weights(m, target.splits["dev"], b, output=source.outputs,
                                   scored=rerank_scores(m, target.splits["dev"], b, target.graphs("dev", b)))
    test = target.splits["test"]
    scored = rerank_scores(m, test, b, target.graphs("test", b))
    wi, wt, output = fusion_for_output(source.fusion)

    def rsum(w_i2t: float, w_t2i: float, mode: str) -> float:
        return evaluate(combine_any(test, scored, w_i2t, w_t2i, mode))["rsum"]
    return {"learned": rsum(1.0, 1.0, output), "own": rsum(wi, wt, output),
            "target_dev": rsum(chosen.i2t, chosen.t2i, chosen.output),
            "fusion_own": {"i2t": wi, "t2i": wt, "output": output},
            "fusion_target_dev": {"i2t": chosen.i2t, "t2i": chosen.t2i, "output": chosen.output,
                                  "dev_rsum": chosen.dev_rsum, "dev_base_rsum": chosen.base_rsum}}


# ------------------------------------------------------------------ tables
def gain_matrix(cells: Sequence[Dict[str, Any]], combos: Sequence[str], bases: Dict[str, float], recipe: str,
                setting: str) -> Tuple[List[List[Optional[float]]], List[List[Optional[float]]]]:
    """``(mean, std)`` over seeds of the rSum gain over the target's base; rows: source, columns: target."""
    mean: List[List[Optional[float]]] = []
    std: List[List[Optional[float]]] = []
    for a in combos:
        mean.append([])
        std.append([])
        for b in combos:
            gains = [c[setting] - bases[b] for c in cells if (c["recipe"], c["source"], c["target"]) == (recipe, a, b)]
            m, s = mean_std(gains) if gains else (None, None)
            mean[-1].append(m)
            std[-1].append(s)
    return mean, std


def transfer_summary(gain: Sequence[Sequence[float]], target_pct: float = 70.0) -> Dict[str, Any]:
    """Off-diagonal (transfer) against diagonal (in-domain) gains of a square matrix: how many off-diagonal cells
    are above the base, the mean gains, the mean off-diagonal gain as a % of the mean in-domain gain (``None``
    when the in-domain mean is not positive), the same per target column, and whether the targets are met."""
    n = len(gain)
    if n < 2 or any(len(row) != n for row in gain):
        raise ValueError(f"gain: expected a square matrix of at least 2 combos, got {n} row(s)")
    diag = [gain[i][i] for i in range(n)]
    off = [gain[i][j] for i in range(n) for j in range(n) if i != j]
    mean_in, mean_off = sum(diag) / n, sum(off) / len(off)
    per_target = []
    for j in range(n):
        col = [gain[i][j] for i in range(n) if i != j]
        per_target.append(100.0 * (sum(col) / len(col)) / diag[j] if diag[j] > 0 else None)
    ratio = 100.0 * mean_off / mean_in if mean_in > 0 else None
    above = sum(g > 0 for g in off)
    return {"off_diagonal_above_base": above, "off_diagonal_cells": len(off), "mean_in_domain_gain": mean_in,
            "mean_off_diagonal_gain": mean_off, "ratio_pct": ratio, "per_target_ratio_pct": per_target,
            "targets_met": above == len(off) and ratio is not None and ratio >= target_pct}


def summary_line(s: Dict[str, Any]) -> str:
    """One table's summary in words."""
    ratio = "n/a (in-domain gain not positive)" if s["ratio_pct"] is None else f"{s['ratio_pct']:.0f}%"
    return (f"Off-diagonal cells above the target's base: {s['off_diagonal_above_base']}/{s['off_diagonal_cells']}; "
            f"mean off-diagonal gain {s['mean_off_diagonal_gain']:+.2f} = {ratio} of the mean in-domain gain "
            f"({s['mean_in_domain_gain']:+.2f}); targets (every off-diagonal cell above the base, at least 70%): "
            f"{'met' if s['targets_met'] else 'NOT met'}.")


def matrix_lines(combos: Sequence[str], bases: Dict[str, float], mean, std, summary: Dict[str, Any]) -> List[str]:
    """A gain matrix as a markdown table (diagonal in bold), a transfer/in-domain row and the summary line."""
    lines = ["| trained on \\ re-ranks | " + " | ".join(f"{b} (base {bases[b]:.1f})" for b in combos) + " |",
             "|---|" + "---:|" * len(combos)]
    for i, a in enumerate(combos):
        cells = []
        for j in range(len(combos)):
            text = "-" if mean[i][j] is None else f"{mean[i][j]:+.2f}" + (f" ± {std[i][j]:.2f}" if std[i][j] else "")
            cells.append(f"**{text}**" if i == j else text)
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append("| transfer / in-domain | " + " | ".join("n/a" if r is None else f"{r:.0f}%"
                                                         for r in summary["per_target_ratio_pct"]) + " |")
    return lines + ["", summary_line(summary)]


def tables(payload: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per recipe and setting: the gain matrix (mean, std) and its summary."""
    c = payload["config"]
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for recipe in c["recipes"]:
        out[recipe] = {}
        for setting in SETTINGS:
            mean, std = gain_matrix(payload["cells"], c["combos"], payload["base_rsum"], recipe, setting)
            complete = all(v is not None for row in mean for v in row)
            out[recipe][setting] = {"gain": mean, "std": std,
                                    "summary": transfer_summary(mean) if complete else None}
    return out


def markdown(payload: Dict[str, Any]) -> str:
    c, t = payload["config"], payload["tables"]
    lines = [f"Command: `{payload['command']}`", "", f"**{PROXY_NOTE}.**", "",
             f"Each recipe trained on the first {c['train_images']} Flickr30K-train images of the source combo "
             f"({c['epochs'] or 'recipe'} epoch(s), seeds {','.join(map(str, c['seeds']))}; epoch and own fusion "
             "chosen on the source's Flickr30K dev), then re-ranking the target combo's Flickr30K test split from "
             "the target's own scores. Cells: rSum gain over the target's base (mean over seeds, sample std after "
             "±); rows: source (trained on), columns: target; diagonal (bold): in-domain. Bottom row: per target, "
             "the mean off-diagonal gain as a % of its in-domain gain."]
    if c.get("limit"):
        lines += ["", f"**Smoke run: every dev and test split cut to its first {c['limit']} images.**"]
    if not payload.get("complete", True):
        lines += ["", "**Partial: run in progress.**"]
    for recipe, per in t.items():
        for setting, what in SETTINGS.items():
            m = per[setting]
            lines += ["", f"## {recipe}: {what}", ""]
            if m["summary"] is None:
                lines.append("(incomplete)")
                continue
            lines += matrix_lines(c["combos"], payload["base_rsum"], m["gain"], m["std"], m["summary"])
    return "\n".join(lines) + "\n"


def heatmap(payload: Dict[str, Any], path: Path) -> None:
    """``OUT.png``: one row of panels per recipe, one panel per setting; colour = gain over the target's base."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    combos, t = payload["config"]["combos"], payload["tables"]
    n = len(combos)
    fig, axes = plt.subplots(len(t), len(SETTINGS), figsize=(4.6 * len(SETTINGS) + 1, 0.6 * n * len(t) + 1.6 * len(t)),
                             squeeze=False)
    for row, (recipe, per) in zip(axes, t.items()):
        values = [v for s in SETTINGS for r in per[s]["gain"] for v in r if v is not None]
        span = max([abs(v) for v in values] + [1e-6])
        for ax, setting in zip(row, SETTINGS):
            gain = [[float("nan") if v is None else v for v in r] for r in per[setting]["gain"]]
            im = ax.imshow(gain, cmap="RdYlGn", vmin=-span, vmax=span)
            for i in range(n):
                for j in range(n):
                    if gain[i][j] == gain[i][j]:
                        ax.text(j, i, f"{gain[i][j]:+.1f}", ha="center", va="center", fontsize=8,
                                fontweight="bold" if i == j else "normal")
            ax.set_xticks(range(n), combos, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(n), combos, fontsize=8)
            ax.set_xlabel("re-ranks (target)", fontsize=8)
            ax.set_ylabel("trained on (source)", fontsize=8)
            ax.set_title(f"{recipe}: {SETTINGS[setting]}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8, label="rSum gain over target base")
    fig.suptitle(f"Transfer across base scorers, Flickr30K test. {PROXY_NOTE}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------ run
def write(payload: Dict[str, Any], out: Path, complete: bool) -> None:
    """OUT.json, OUT.md and OUT.png, each atomically."""
    payload["complete"] = complete
    payload["tables"] = tables(payload)
    write_results(out, payload, markdown(payload))
    heatmap(payload, out.with_suffix(".png"))


def run(args, payload: Dict[str, Any], out: Path) -> None:
    """Obtain every source model, then re-rank every target with every one; the files are rewritten per target."""
    models: Dict[str, Dict[Tuple[str, int], Source]] = {}
    for a in args.combos:
        models[a] = source_models(a, f30k_split(a, "dev", args.limit), args)
        payload["models"][a] = {f"{r} seed {s}": m.info for (r, s), m in models[a].items()}
    for b in args.combos:
        t0 = time.perf_counter()
        target = Target(b, args.limit)  # one target's bundles and graphs in memory at a time
        payload["base_rsum"][b] = target.base_rsum
        for (recipe, seed) in models[b]:
            for a in args.combos:
                res = cell(models[a][(recipe, seed)], target)
                payload["cells"].append({"recipe": recipe, "seed": seed, "source": a, "target": b, **res})
        log(f"target {b}: base {target.base_rsum:.2f}, {len(args.combos) * len(models[b])} cells in "
            f"{time.perf_counter() - t0:.0f}s, peak RSS {peak_rss_gib():.1f} GiB")
        del target
        if b != args.combos[-1]:
            write(payload, out, complete=False)


def start_payload(script: str, args, argv: Optional[Sequence[str]]) -> Dict[str, Any]:
    """A transfer run's results before any cell: its command, the proxy note and its config (every option, the
    models folder as :func:`~benchmarks.common.portable_file` writes it, each recipe's record, torch threads)."""
    config = dict(vars(args), models=args.models and portable_file(args.models),
                  recipe_records={n: recipe_for(n, args.epochs).record() for n in args.recipes},
                  torch_threads=torch.get_num_threads())
    return {"command": command_line(script, argv), "note": PROXY_NOTE, "config": config, "models": {},
            "base_rsum": {}, "cells": []}


def stamp(payload: Dict[str, Any], t0: float) -> None:
    """Record the run's wall time since ``t0`` and its peak RSS in ``payload``."""
    payload["seconds"] = round(time.perf_counter() - t0, 1)
    payload["peak_rss_gib"] = round(peak_rss_gib(), 2)


def check_args(args) -> None:
    """Parse the list options in place; ValueError naming the flag."""
    args.combos = [f"{c}:{i}" for c, i in (parse_combo(x, "--combos") for x in parse_list(args.combos, "--combos"))]
    if len(set(args.combos)) != len(args.combos) or len(args.combos) < 2:
        raise ValueError("--combos: expected at least 2 distinct combos")
    args.recipes = parse_list(args.recipes, "--recipes")
    for name in args.recipes:
        try:
            recipe_for(name)
        except ValueError as err:
            raise ValueError(f"--recipes: {err}") from None
    args.seeds = parse_list(args.seeds, "--seeds", int)
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs: expected at least 1")
    if args.train_images < 2 or (args.limit is not None and args.limit < 10):
        raise ValueError("--train-images: expected at least 2; --limit: at least 10")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combos", default=DEFAULT_COMBOS, help="comma-separated CROSS:INTRA combos (at least 2)")
    p.add_argument("--recipes", default="paper,inductive,transductive",
                   help="recipes (pillargraph.train.recipes) or dev-search variants of benchmarks/common.py")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; cells are their mean")
    p.add_argument("--train-images", type=int, default=3000, help="first N Flickr30K-train images per source")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each recipe's)")
    p.add_argument("--train-form", default="auto", choices=("auto", "dense", "lists"),
                   help="the training split as the CLI reads it (auto: dense up to 5,000 images)")
    p.add_argument("--lists-k", type=int, default=100, help="list depth of the lists form")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="trained models by combo/recipe/seed (caption_proxy.py --save-models DIR): finished runs "
                        "are loaded, missing ones trained and kept there")
    p.add_argument("--limit", type=int, default=None, help="cut every dev and test split to its first N images "
                                                           "(smoke runs)")
    p.add_argument("--out", default="benchmarks/results/transfer", help="output path without extension")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        p.error(str(err))
    payload = start_payload("benchmarks/transfer.py", args, argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    if args.models:  # every folder checked before anything is trained
        try:
            for combo in args.combos:
                claim_models(combo, f30k_split(combo, "dev", args.limit), args)
        except ValueError as err:
            p.error(str(err))
    run(args, payload, out)
    stamp(payload, t0)
    write(payload, out, complete=True)
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
