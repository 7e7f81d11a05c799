"""Caption-proxy benchmark: the learned and every training-free re-ranker on real captions.

No image pixels are available offline, so each image is stood in for by one of
its own captions (see ``pillargraph.data.captions`` and
``shared/data/captions/README.md``). A *combo* ``CROSS:INTRA`` names the text
encoder of the cross-modal score and that of the intra-modal similarities
(``minilm``, ``tfidf``, ``lsa``, or, as CROSS only, ``bm25``; see
``pillargraph.data.text_encoders``): ``minilm:minilm`` is a same-encoder problem,
``tfidf:minilm`` or ``bm25:minilm`` one where the unimodal retrievers know more
than the cross-modal scorer, as in many real image-text systems. A ``bm25``
combo has no cross-modal embeddings to build a query bank from (its scores are
query-document products, not cosines), so bank methods report why they did not run.

Protocols:

* ``transfer``: train on the COCO 5K proxy (``coco_testall``), select the model
  and its base-fusion weights on Flickr30K dev, report on Flickr30K test.
* ``coco1k``: 5-fold cross-validation over the COCO 5K proxy; for fold ``f``
  (1000 consecutive images and their captions) train on the other four folds,
  select on COCO dev, test on fold ``f``; every metric is averaged over folds.

* ``f30k``: the paper's own setting: train on the Flickr30K-train proxy (29,000
  images), select on Flickr30K dev, test on Flickr30K test.
* ``f30k-coco``: the f30k models, fusion selected on COCO dev, tested on COCO 1K
  (5 folds, averaged) and COCO 5K (with ECCV Caption and CxC metrics).

Every test bundle gets the base scores, every training-free re-ranker (bank
methods use a query bank from the protocol's dev split, scored with the same
cross-modal encoder) and each learned recipe (``--recipes``, from
``pillargraph.train.recipes``, trained as ``pillargraph train --recipe`` trains
it) alone and with the dev-selected base fusion. Writes ``OUT.md`` (command
first), ``OUT.json`` (config, every number, time and peak memory per stage) and
``OUT.png`` (rSum change against the base per method, one panel per combo and
protocol), each atomically.

    python benchmarks/caption_proxy.py [--combos minilm:minilm,tfidf:minilm] [--protocols transfer,coco1k]
        [--recipes paper,inductive,transductive] [--epochs N] [--seeds 0,1,2] [--folds 5] [--methods a,b]
        [--fold-methods a,b] [--limit N] [--out benchmarks/results/caption_proxy]

The code is split by concern: ``caption_proxy_data.py`` (protocols, row names, bundles),
``caption_proxy_runs.py`` (training, dev tuning, test cases) and ``caption_proxy_report.py``
(markdown, figure, merging); this file holds the command line.

Time: the default run (both default combos, ``transfer,coco1k``) took about 26 minutes on 2 shared cores
with ``--epochs 3`` (``benchmarks/results/caption_proxy.json``); the f30k protocols on all 29,000 training
images about 80 minutes per combo at one epoch and three seeds (``caption_proxy_f30k.json``), more with more
epochs, which ``--train-images`` cuts. A ``--limit 200`` smoke run takes a few minutes.

These numbers are text-to-text retrieval results, NOT image-text results.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import the encoders

import argparse
import gc
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph.baselines import available_rerankers, get_reranker

from benchmarks.caption_proxy_data import (PAPER_PROTOCOLS, PROTOCOLS, Bundles, PaperData, learned_recipes,
                                           parse_combos, parse_names)
from benchmarks.caption_proxy_report import merge_runs, to_markdown, write_outputs
from benchmarks.caption_proxy_runs import run_paper_protocol, run_protocol
from benchmarks.common import ENCODERS, VARIANTS, command_line, description, log, peak_rss_gib, portable_file, variant


# ------------------------------------------------------------------ main
def check_args(args) -> Tuple[List[Tuple[str, str]], List[str], List[str]]:
    """Validate the arguments (ValueError naming the flag); returns ``(combos, protocols, cuts)``."""
    combos = parse_combos(args.combos)
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    for x in protocols:
        if x not in PROTOCOLS:
            raise ValueError(f"--protocols: unknown protocol {x!r}; expected {list(PROTOCOLS)}")
    if (args.epochs is not None and args.epochs < 1) or args.folds < 2:
        raise ValueError("--epochs must be >= 1 and --folds >= 2")
    args.recipes = [x.strip() for x in args.recipes.split(",") if x.strip()]
    if not args.recipes or len(set(args.recipes)) != len(args.recipes):
        raise ValueError("--recipes: expected distinct names")
    for name in args.recipes:
        if name not in VARIANTS:
            raise ValueError(f"--recipes: unknown recipe {name!r}; expected some of {sorted(VARIANTS)}")
    if args.save_models and not any(x in PAPER_PROTOCOLS for x in protocols):
        raise ValueError(f"--save-models: only the {' and '.join(PAPER_PROTOCOLS)} protocols train on the "
                         f"Flickr30K-train proxy; add one to --protocols")
    if args.limit is not None and args.limit < 2 * args.folds:
        raise ValueError(f"--limit: need at least {2 * args.folds} images")
    args.seeds = [args.seed] if args.seeds is None else [int(x) for x in args.seeds.split(",") if x.strip()]
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ValueError("--seeds: expected distinct integers")
    all_methods = list(available_rerankers())
    args.methods = parse_names(args.methods, "methods") or all_methods
    args.methods_5k = [get_reranker(m).name for m in parse_names(args.methods_5k, "methods-5k")
                       or args.methods]
    args.fold_methods = parse_names(args.fold_methods, "fold-methods") or args.methods
    args.methods = [get_reranker(m).name for m in args.methods]
    args.fold_methods = [get_reranker(m).name for m in args.fold_methods]
    return combos, protocols, budget_cuts(args, protocols, all_methods)


def budget_cuts(args, protocols: List[str], all_methods: List[str]) -> List[str]:
    """What the time-budget options cut, one sentence each (the report lists them)."""
    cuts = []
    for name, recipe in learned_recipes(args).items():
        if args.epochs is not None and args.epochs < variant(name).train.get("epochs", args.epochs):
            cuts.append(f"{name} trained for {args.epochs} epoch(s) instead of its recipe's "
                        f"{variant(name).train['epochs']}")
    if args.train_images is not None:
        if args.train_images < 2:
            raise ValueError("--train-images: need at least 2")
        cuts.append(f"each learned re-ranker trained on only the first {args.train_images} images (and their "
                    f"captions) of its training pool in file order, not the whole pool"
                    + ("; on the COCO folds that is the lowest-numbered other fold, so several folds share one "
                       "training set (fold 1 trains on fold 2, every later fold on fold 1; no model sees its own "
                       "test fold)" if "coco1k" in protocols else ""))
    if args.max_folds is not None:
        if not 1 <= args.max_folds <= args.folds:
            raise ValueError(f"--max-folds: expected 1..{args.folds}")
        if args.max_folds < args.folds and "coco1k" in protocols:
            cuts.append(f"COCO 1K: only the first {args.max_folds} of {args.folds} folds were run and averaged")
    if "f30k-coco" in protocols and not args.skip_5k:
        cut5k = [m for m in args.methods if m not in args.methods_5k]
        if cut5k:
            cuts.append(f"COCO 5K (f30k-coco): {', '.join(cut5k)} not run (time budget); "
                        f"{', '.join(args.methods_5k)} ran")
    if "f30k-coco" in protocols and args.skip_5k:
        cuts.append("COCO 5K (f30k-coco) skipped")
    missing = [m for m in all_methods if m not in args.methods]
    if missing:
        cuts.append(f"training-free methods not run anywhere: {', '.join(missing)}")
    fold_missing = [m for m in args.methods if m not in args.fold_methods]
    if fold_missing and "coco1k" in protocols:
        cuts.append(f"on the COCO 1K folds only {', '.join(args.fold_methods)} ran; "
                    f"{', '.join(fold_missing)} ran on Flickr30K test only")
    return cuts


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combos", default="minilm:minilm,tfidf:minilm",
                   help=f"comma-separated CROSS:INTRA encoder pairs ({'|'.join(ENCODERS)}; bm25 as CROSS only)")
    p.add_argument("--protocols", default="transfer,coco1k",
                   help=f"comma-separated: {', '.join(PROTOCOLS)}")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="folds of the coco1k protocol")
    p.add_argument("--methods", default=None, help="comma-separated training-free methods (default: all)")
    p.add_argument("--fold-methods", default=None,
                   help="methods on the coco1k folds (default: --methods); a cut here is reported")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on only the first N images of each training pool (a time-budget cut, reported)")
    p.add_argument("--max-folds", type=int, default=None,
                   help="run only the first K folds of coco1k (a time-budget cut, reported)")
    p.add_argument("--limit", type=int, default=None, help="cut every split to its first N images (smoke runs)")
    p.add_argument("--recipes", default="inductive",
                   help="comma-separated learned recipes (pillargraph.train.recipes, or a dev-search variant of "
                        "benchmarks/common.py), each trained and reported")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds of the learned re-ranker on f30k/f30k-coco (default: --seed)")
    p.add_argument("--train-form", default="auto", choices=("auto", "dense", "lists"),
                   help="f30k/f30k-coco: the Flickr30K-train proxy as one dense bundle or as top-k neighbour lists "
                        "searched within each recipe's episodes, as the CLI reads them (auto: dense up to 5,000 "
                        "images)")
    p.add_argument("--lists-k", type=int, default=100, help="list depth of the lists form")
    p.add_argument("--methods-5k", default=None,
                   help="training-free methods on COCO 5K (f30k-coco; default: every one of --methods); the others "
                        "are cut there, reported")
    p.add_argument("--skip-5k", action="store_true", help="f30k-coco: skip the COCO 5K test (reported)")
    p.add_argument("--save-models", default=None, metavar="DIR",
                   help="f30k/f30k-coco: keep each trained model in DIR/CROSS-INTRA/RECIPE/seedS (best.pt with its "
                        "dev-selected fusion, data.json); a finished run there is reused, so benchmarks/transfer.py "
                        "--models DIR re-ranks with the same models")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--out", default="benchmarks/results/caption_proxy", help="output path without extension")
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="only merge earlier runs' JSON files (e.g. one per combo, run in parallel) into --out")
    return p


def run_config(args, combos: List[Tuple[str, str]], protocols: List[str], cuts: List[str],
               all_methods: List[str], device: str) -> Dict[str, Any]:
    """The run's ``config`` as ``OUT.json`` records it (time, peak memory and completeness are added as it runs)."""
    return {"combos": [f"{c}:{i}" for c, i in combos], "protocols": protocols, "epochs": args.epochs,
            "seed": args.seed, "folds": args.folds, "max_folds": args.max_folds,
            "train_images": args.train_images, "methods": args.methods,
            "fold_methods": args.fold_methods, "all_methods": all_methods, "limit": args.limit,
            "device": device, "torch_threads": torch.get_num_threads(), "cuts": cuts,
            "anchor": 0, "tfidf_fit": ["f30k_dev", "coco_dev"],
            "recipes": {name: r.record() for name, r in learned_recipes(args).items()},
            "seeds": args.seeds, "train_form": args.train_form, "lists_k": args.lists_k,
            "methods_5k": args.methods_5k, "skip_5k": args.skip_5k,
            "save_models": args.save_models and portable_file(args.save_models),
            "versions": {"torch": torch.__version__, "python": platform.python_version()}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.merge:
        write_outputs(merge_runs([Path(x) for x in args.merge]), Path(args.out))
        return 0
    try:
        combos, protocols, cuts = check_args(args)
    except ValueError as err:
        p.error(str(err))
    all_methods = list(available_rerankers())
    command = command_line("benchmarks/caption_proxy.py", argv)
    device = args.device or "cpu"
    t_start = time.perf_counter()
    config = run_config(args, combos, protocols, cuts, all_methods, device)
    payload = {"command": command, "note": "caption-proxy results on real captions, NOT image-text results",
               "config": config, "results": []}
    out = Path(args.out)
    todo, done = len(combos) * len(protocols), 0
    for cross, intra in combos:
        data = Bundles(cross, intra, args.limit, device)
        paper = None
        for proto in protocols:
            log(f"combo {cross}:{intra}, protocol {proto}")
            if proto in PAPER_PROTOCOLS:
                paper = paper or PaperData(cross, intra, args)
                results = run_paper_protocol(proto, data, paper, args)
            else:
                results = [run_protocol(proto, data, args)]
            for res in results:
                res["combo"] = f"{cross}:{intra}"
            payload["results"].extend(results)
            done += 1
            config["seconds_total"] = round(time.perf_counter() - t_start, 1)
            config["peak_rss_gib"] = round(peak_rss_gib(), 2)
            config["complete"] = done == todo
            # written after every (combo, protocol), so an interrupted run keeps what it finished
            write_outputs(payload, out)
            log(f"  done in {results[-1]['seconds']}s; wrote {out}.md, .json, .png ({done}/{todo})")
        del data, paper
        gc.collect()
    print(to_markdown(payload))
    log(f"total {config['seconds_total']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
