"""Dev-split search over the learned re-ranker's settings on the caption proxy (never reads a test split).

Trains one model per named variant (a recipe of ``pillargraph.train.recipes``, or
one of ``benchmarks.common.VARIANTS``: a recipe with some fields changed) on a
caption-proxy training split, exactly as ``pillargraph train --recipe`` would
(``fit_reranker(recipe=...)``: the recipe's episodes cut from the split), and
records its dev rSum: the learned scores alone (fusion weight 1) and with the
dev-selected base fusion. The recipes are set from what wins here; this file is
the record of what was searched.

Training data: the first ``--train-images`` of the Flickr30K train proxy (29,000
images), as one dense bundle (up to 5,000 images by default) or as top-k
neighbour lists searched within the recipe's episodes (``--form lists``).
Takes about 3-6 minutes per variant, seed and epoch at 3,000 images on 2 cores.

    python benchmarks/learned_search.py --combo tfidf:minilm --variants inductive,transductive \
        [--train-images 3000] [--form auto] [--epochs 1] [--seeds 0] \
        [--out benchmarks/results/learned_search]

Results are appended to ``OUT.jsonl`` as each run finishes (one JSON object
per run, config included) and summarised in ``OUT.md``. Caption-proxy numbers
are text-to-text retrieval results, NOT image-text results.

Time: about 3-6 minutes per variant, seed and epoch at 3,000 images on 2 cores: about 10-40 minutes for the
default two variants, one seed, each recipe's epochs.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.io import atomic_write_text
from pillargraph.metrics import evaluate
from pillargraph.train import fit_reranker

from benchmarks.common import ProxyTrain, command_line, description, log, peak_rss_gib, variant


def run_one(name: str, data: ProxyTrain, seed: int, epochs: Optional[int]) -> Dict[str, Any]:
    recipe = variant(name)
    if epochs is not None:
        recipe = recipe.override(train={"epochs": epochs})
    dev = data.dev
    fitted = fit_reranker(data.train_for(recipe), dev, recipe=recipe, seed=seed, episode_seed=data.episode_seed)
    result = fitted.result
    return {"variant": name, "seed": seed, "config": fitted.settings(),
            "train": data.label(recipe), "transductive": fitted.transductive, "dev_base_rsum": evaluate(dev)["rsum"],
            "dev_learned_rsum": result.best_dev_rsum, "dev_fused_rsum": result.fusion["dev_rsum"],
            "fusion": result.fusion, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "history": result.dev_history(),
            "seconds": round(fitted.seconds, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}


def variant_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """What each row's variant was when it ran, from the recipe the row records (a recipe's settings, and so a
    variant's, may have changed since): one line per distinct name and settings."""
    seen: Dict[str, None] = {}
    for r in rows:
        rec = r["config"]["recipe"]
        b, m = rec["builder"], rec["model"]
        episodes = "+".join(map(str, rec["episode_images"])) or "whole split"
        seen[f"- `{r['variant']}`: node features {b.get('node_features', [])}, {b.get('num_pillars')} pillars, "
             f"k {b.get('k_i2t')}/{b.get('k_t2i')}; {m.get('layer')}, hidden {m.get('hidden_channels')}, "
             f"{m.get('num_layers')} layers" + (f", feature skip {m['feature_skip']}" if m.get("feature_skip") else "")
             + f"; episodes {episodes}"] = None
    return list(seen)


def summary(rows: List[Dict[str, Any]], command: str) -> str:
    """OUT.md: every command that added rows (``command`` for rows that lack one), the table, and the variants."""
    commands = " ; ".join(dict.fromkeys(r.get("command", command) for r in rows)) or command
    lines = [f"Command: `{commands}`", "",
             "Dev-split search (Flickr30K dev caption proxy; text-to-text, NOT image-text results). "
             "rSum of the learned scores alone and with the dev-selected base fusion, both in the dev-selected "
             "output mode (`fused`: the two directions mixed; `directions`: each on its own; rows before round 3 "
             "had `fused` only).", "",
             "| combo | train | variant | seed | transductive | output | dev base | dev learned | dev learned + fusion "
             "| best epoch | s |", "|---|---|---|---:|:---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['combo']} | {r['train']} | {r['variant']} | {r['seed']} | "
                     f"{'yes' if r['transductive'] else '-'} | {r['fusion'].get('output', 'fused')} | "
                     f"{r['dev_base_rsum']:.2f} | "
                     f"{r['dev_learned_rsum']:.2f} | {r['dev_fused_rsum']:.2f} | {r['best_epoch'] + 1} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Each variant as it ran (a recipe, or one of `benchmarks.common.VARIANTS`; the settings the rows "
                  "record):", ""]
    return "\n".join(lines + variant_lines(rows)) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combo", default="tfidf:minilm")
    p.add_argument("--variants", default="inductive,transductive")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--form", default="auto", choices=("auto", "dense", "lists"),
                   help="training split as one dense bundle or as neighbour lists (auto: dense up to 5,000 images)")
    p.add_argument("--lists-k", type=int, default=100)
    p.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default="benchmarks/results/learned_search")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        variant(name)
    command = command_line("benchmarks/learned_search.py", argv)
    out = Path(args.out)
    data = ProxyTrain(args.combo, args.train_images, args.form, args.lists_k)
    jsonl = out.with_suffix(".jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            log(f"{args.combo} {data.label(variant(name))}: {name} seed {seed}")
            row = run_one(name, data, seed, args.epochs)
            row.update(combo=args.combo, command=command)
            rows.append(row)
            atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_text(out.with_suffix(".md"), summary(rows, command))
            log(f"  dev base {row['dev_base_rsum']:.2f} learned {row['dev_learned_rsum']:.2f} "
                f"fused {row['dev_fused_rsum']:.2f} ({row['seconds']}s, peak {row['peak_rss_gib']} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
