"""Transfer from several base scorers at once: a re-ranker trained on the other scorers re-ranks a new one.

``transfer.py`` trains on one combo and re-ranks another. Here, for every target
combo ``B`` of ``--combos``, every recipe and every seed, one model is trained
on the episodes of every *other* combo together (leave one scorer out) and
re-ranks ``B``'s Flickr30K test split, a scorer it has never seen, in
``transfer.py``'s two settings: the base fusion re-selected on ``B``'s dev (a
little target data), and the model's own fusion, chosen for the best mean dev
rSum over its source combos' Flickr30K dev splits (no target data). Beside it,
per target: ``B``'s in-domain model (trained on ``B`` alone: ``transfer.py``'s
diagonal, loaded from ``--models`` or trained) and one model trained on all the
combos together, ``B`` included.

The training split of a mixed model is the first ``--train-images``
Flickr30K-train images seen through each source scorer, given as one dense
split per combo, as ``pillargraph train --train A.npz B.npz ...`` reads them:
each cut into the recipe's episodes and all the episodes mixed into one split
(:func:`pillargraph.data.as_episodes`, :func:`pillargraph.data.mix_splits`),
whose graphs the trainer shuffles together. Such a model sees one combo's episodes per source combo, so it trains
that many times longer than a single-combo model. The trainer keeps the best
epoch by the first source's dev rSum (with ``--epochs 1`` there is no choice).

Cells are rSum gains over ``B``'s base on Flickr30K test (mean over
``--seeds``, sample std). Each table's summary gives the mean leave-one-out gain
as a % of the mean in-domain gain (the transfer issue's target: at least 70%,
every target above its base). Writes ``OUT.md`` (command first) and ``OUT.json``
(config, every number, every model's fusion), each atomically; models are kept in
``--models`` (``ROOT/A+B+.../RECIPE/seedS``) so a rerun only re-ranks.

Time: with 5 combos, 3,000 training images and 1 epoch, one thread (two jobs on
the 2-core machine): about 45 minutes per seed for ``inductive`` and 55 for
``transductive`` (one model on all five combos, 8-11 minutes, and five
leave-one-out models on four, 6-10 minutes each), plus a few minutes of
re-ranking (15 cells); only the re-ranking when every model is in ``--models``.

    python benchmarks/transfer_mixed.py [--combos A,B,...] [--recipes inductive,transductive] [--seeds 0]
        [--train-images 3000] [--epochs N] [--models DIR] [--limit N] [--out benchmarks/results/transfer_mixed]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.bundle import SimilarityBundle
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.nn import PillarReranker
from pillargraph.rerank import best_fusion_weights, model_builder, rerank_scores, select_fusion_weights
from pillargraph.train import Recipe, TrainConfig, fit_reranker

from benchmarks.common import (PROXY_NOTE, ProxyTrain, claim_model_dir, description, load_finished, log,
                               mean_std, peak_rss_gib, portable_file, recipe_for, write_results)
from benchmarks.transfer import (DEFAULT_COMBOS, SETTINGS, Source, Target, cell, check_args, source_models, stamp,
                                start_payload)

#: The models of each target's row: in-domain, all combos together, every combo but the target.
MODELS = {"in_domain": "in-domain (trained on the target alone)", "all": "all combos together (target included)",
          "leave_out": "every other combo (target never seen)"}
#: Dense episodes are cut from a dense split: at most this many training images per combo.
MAX_TRAIN_IMAGES = 5000


def combo_split(combo: str, recipe: Recipe, args) -> SimilarityBundle:
    """``combo``'s first ``--train-images`` Flickr30K-train images as one dense bundle, what ``pillargraph train``
    reads from a ``.npz`` bundle. Read again for every model (a few seconds), so that only the model in training
    holds its data."""
    return ProxyTrain(combo, args.train_images, "dense").train_for(recipe)


def mixed_info(sources: Sequence[str], name: str, recipe: Recipe, seed: int, args, dev_images: int) -> Dict[str, Any]:
    """What a mixed model is trained on (its run folder's ``data.json``)."""
    return {"combos": list(sources), "recipe_name": name, "recipe": recipe.record(), "seed": seed,
            "train_images": args.train_images, "train_form": "dense episodes of each combo", "episode_seed": 0,
            "dev": {"split": "f30k_dev", "images": dev_images, "epoch_chosen_on": sources[0]}}


def pooled_fusion(model: PillarReranker, builder: PillarGraphBuilder, devs: Sequence[Target],
                  outputs: Sequence[str]) -> Dict[str, Any]:
    """The base fusion (weights and output mode) with the best mean dev rSum over ``devs``' dev splits; ties go
    to the earlier mode, then to the smaller weights, as :func:`~pillargraph.rerank.select_fusion_weights`."""
    best: Optional[Dict[str, Any]] = None
    for output in outputs:
        tables = [select_fusion_weights(model, t.splits["dev"], builder, output=output,
                                        scored=rerank_scores(model, t.splits["dev"], builder, t.graphs("dev", builder))
                                        ).table for t in devs]
        mean = {k: sum(t[k] for t in tables) / len(tables) for k in tables[0]}
        wi, wt = best_fusion_weights(mean)
        if best is None or round(mean[(wi, wt)], 6) > round(best["dev_rsum_mean"], 6):
            best = {"i2t": wi, "t2i": wt, "output": output, "dev_rsum_mean": mean[(wi, wt)],
                    "dev_base_rsum_mean": mean[(0.0, 0.0)]}
    assert best is not None
    return best


def mixed_model(sources: Sequence[str], name: str, seed: int, targets: Dict[str, Target], args) -> Source:
    """The model of ``name`` and ``seed`` trained on every combo of ``sources`` together: loaded from a finished
    run in ``--models``, else trained (and kept there when ``--models`` is given); its own fusion pooled over the
    sources' dev splits."""
    recipe = recipe_for(name, args.epochs)
    dev = targets[sources[0]].splits["dev"]
    path = claim_model_dir(args.models, "+".join(sources), name, seed,
                           mixed_info(sources, name, recipe, seed, args, dev.num_images), "--models") \
        if args.models else None
    loaded = load_finished(path) if path is not None else None
    t0 = time.perf_counter()
    if loaded is not None:
        model, state = loaded
        builder, outputs, info = model_builder(model), TrainConfig.from_dict(state["train_config"]).fusion_outputs, \
            {"loaded": portable_file(path)}
    else:
        # as `pillargraph train --train A.npz B.npz ...`: each split cut into the recipe's episodes, all mixed
        fitted = fit_reranker([combo_split(c, recipe, args) for c in sources], dev, recipe=recipe, seed=seed,
                              out_dir=path)
        model, builder, outputs = fitted.model, fitted.builder, fitted.config.fusion_outputs
        info = {"trained_s": round(time.perf_counter() - t0, 1)}
    fusion = pooled_fusion(model, builder, [targets[c] for c in sources], outputs)
    log(f"  {'+'.join(sources)} {name} seed {seed}: {info}, pooled fusion {fusion['output']} "
        f"{fusion['i2t']}/{fusion['t2i']} ({time.perf_counter() - t0:.0f}s, peak RSS {peak_rss_gib():.1f} GiB)")
    return Source(model, builder, fusion, tuple(outputs), {**info, "combos": list(sources)})


def run_seed(name: str, seed: int, singles: Dict[str, Dict[Tuple[str, int], Source]], targets: Dict[str, Target],
             args, payload: Dict[str, Any]) -> None:
    """Every target's three cells for one recipe and seed."""
    combos = args.combos
    everything = mixed_model(combos, name, seed, targets, args)
    for b in combos:
        leave_out = mixed_model([c for c in combos if c != b], name, seed, targets, args)
        for kind, source in (("in_domain", singles[b][(name, seed)]), ("all", everything),
                             ("leave_out", leave_out)):
            payload["cells"].append({"recipe": name, "seed": seed, "target": b, "model": kind,
                                     **cell(source, targets[b]), "source": source.info})


# ------------------------------------------------------------------ tables
def gains(cells: Sequence[Dict[str, Any]], recipe: str, target: str, kind: str, setting: str,
          base: float) -> List[float]:
    """Per seed, the rSum gain over ``base`` of one target's cell of one model kind and setting."""
    return [c[setting] - base for c in cells if (c["recipe"], c["target"], c["model"]) == (recipe, target, kind)]


def table(payload: Dict[str, Any], recipe: str, setting: str) -> Dict[str, Any]:
    """Per target: mean and std of each model kind's gain; the leave-one-out summary when every cell is there."""
    rows = {}
    for b in payload["config"]["combos"]:
        base = payload["base_rsum"][b]
        rows[b] = {k: mean_std(g) if g else None
                   for k in MODELS for g in [gains(payload["cells"], recipe, b, k, setting, base)]}
    complete = all(v is not None for r in rows.values() for v in r.values())
    summary = None
    if complete:
        mean_in = sum(r["in_domain"][0] for r in rows.values()) / len(rows)
        mean_out = sum(r["leave_out"][0] for r in rows.values()) / len(rows)
        summary = {"targets": len(rows), "leave_out_above_base": sum(r["leave_out"][0] > 0 for r in rows.values()),
                   "mean_in_domain_gain": mean_in, "mean_leave_out_gain": mean_out,
                   "ratio_pct": 100.0 * mean_out / mean_in if mean_in > 0 else None}
        summary["targets_met"] = summary["leave_out_above_base"] == len(rows) and \
            summary["ratio_pct"] is not None and summary["ratio_pct"] >= 70.0
    return {"rows": rows, "summary": summary}


def summary_line(s: Dict[str, Any]) -> str:
    """One table's summary in words."""
    ratio = "n/a (in-domain gain not positive)" if s["ratio_pct"] is None else f"{s['ratio_pct']:.0f}%"
    return (f"Left-out targets above their base: {s['leave_out_above_base']}/{s['targets']}; mean leave-one-out "
            f"gain {s['mean_leave_out_gain']:+.2f} = {ratio} of the mean in-domain gain "
            f"({s['mean_in_domain_gain']:+.2f}); targets (every target above its base, at least 70%): "
            f"{'met' if s['targets_met'] else 'NOT met'}.")


def table_lines(payload: Dict[str, Any], t: Dict[str, Any]) -> List[str]:
    """One recipe and setting's table as markdown, then its summary line."""
    lines = ["| target (base) | " + " | ".join(MODELS.values()) + " | leave-one-out / in-domain |",
             "|---|---:|---:|---:|---:|"]
    for b, row in t["rows"].items():
        cells = ["-" if row[k] is None else f"{row[k][0]:+.2f}" + (f" ± {row[k][1]:.2f}" if row[k][1] else "")
                 for k in MODELS]
        ratio = "-" if row["in_domain"] is None or row["leave_out"] is None or row["in_domain"][0] <= 0 \
            else f"{100.0 * row['leave_out'][0] / row['in_domain'][0]:.0f}%"
        lines.append(f"| {b} ({payload['base_rsum'][b]:.1f}) | " + " | ".join(cells) + f" | {ratio} |")
    return lines + (["", summary_line(t["summary"])] if t["summary"] else [])


def markdown(payload: Dict[str, Any]) -> str:
    c = payload["config"]
    lines = [f"Command: `{payload['command']}`", "", f"**{PROXY_NOTE}.**", "",
             f"Leave-one-scorer-out transfer. Each mixed model is trained on the first {c['train_images']} "
             f"Flickr30K-train images seen through several base scorers (each combo cut into the recipe's episodes, "
             f"all episodes in one training split; {c['epochs'] or 'recipe'} epoch(s), seeds "
             f"{','.join(map(str, c['seeds']))}). Cells: rSum gain over the target's base on its Flickr30K test split "
             "(mean over seeds, sample std after ±). In-domain: a model trained on the target alone "
             "(`transfer.py`'s diagonal); all combos: one model trained on every combo, the target included; every "
             "other combo: one model per target, trained without it. The own fusion of a mixed model is the one with "
             "the best mean dev rSum over its training combos' Flickr30K dev splits."]
    if c.get("limit"):
        lines += ["", f"**Smoke run: every dev and test split cut to its first {c['limit']} images.**"]
    if not payload.get("complete", True):
        lines += ["", "**Partial: run in progress.**"]
    for recipe, per in payload["tables"].items():
        for setting, what in SETTINGS.items():
            lines += ["", f"## {recipe}: {what}", ""] + table_lines(payload, per[setting])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ run
def write(payload: Dict[str, Any], out: Path, complete: bool) -> None:
    """OUT.json and OUT.md, each atomically."""
    payload["complete"] = complete
    payload["tables"] = {r: {s: table(payload, r, s) for s in SETTINGS} for r in payload["config"]["recipes"]}
    write_results(out, payload, markdown(payload))


def run(args, payload: Dict[str, Any], out: Path) -> None:
    """Every target's bundles, the single-combo models, then the mixed models recipe by recipe, seed by seed; the
    files are rewritten after each seed."""
    targets = {c: Target(c, args.limit) for c in args.combos}
    payload["base_rsum"] = {c: t.base_rsum for c, t in targets.items()}
    singles = {c: source_models(c, targets[c].splits["dev"], args) for c in args.combos}
    payload["models"] = {c: {f"{r} seed {s}": m.info for (r, s), m in singles[c].items()} for c in args.combos}
    for name in args.recipes:
        for seed in args.seeds:
            run_seed(name, seed, singles, targets, args, payload)
            write(payload, out, complete=False)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combos", default=DEFAULT_COMBOS, help="comma-separated CROSS:INTRA combos (at least 3)")
    p.add_argument("--recipes", default="inductive,transductive",
                   help="recipes (pillargraph.train.recipes) or dev-search variants of benchmarks/common.py")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; cells are their mean")
    p.add_argument("--train-images", type=int, default=3000,
                   help=f"first N Flickr30K-train images per combo (at most {MAX_TRAIN_IMAGES})")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each recipe's)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="trained models (transfer.py --models DIR): finished runs are loaded, missing ones trained "
                        "and kept there")
    p.add_argument("--limit", type=int, default=None, help="cut every dev and test split to its first N images "
                                                           "(smoke runs)")
    p.add_argument("--out", default="benchmarks/results/transfer_mixed", help="output path without extension")
    return p


def check_mixed_args(args) -> None:
    """:func:`benchmarks.transfer.check_args`, then this script's own limits; ValueError naming the flag."""
    args.train_form, args.lists_k = "dense", 100  # the single-combo models' split, as transfer.py reads it
    check_args(args)
    if len(args.combos) < 3:
        raise ValueError("--combos: expected at least 3 combos (a left-out target needs at least 2 sources)")
    if args.train_images > MAX_TRAIN_IMAGES:
        raise ValueError(f"--train-images: at most {MAX_TRAIN_IMAGES} (mixed models cut dense episodes)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_mixed_args(args)
    except ValueError as err:
        p.error(str(err))
    payload = start_payload("benchmarks/transfer_mixed.py", args, argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    run(args, payload, out)
    stamp(payload, t0)
    write(payload, out, complete=True)
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
