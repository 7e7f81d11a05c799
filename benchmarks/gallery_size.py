"""Gallery size: does a re-ranker trained on episodes of E images re-rank galleries of 1x, 5x and 25x E?

A recipe (``pillargraph.train.recipes``) is trained on the Flickr30K-train
caption proxy with one or more episode-size settings (``--episodes "200;200,1000"``:
episodes of 200 images, or 200 and 1000 mixed), exactly as ``pillargraph train
--recipe R --episode-images ...`` trains it, and evaluated on disjoint galleries
of ``E``, ``5E`` and ``25E`` images cut from one split (consecutive image blocks,
metrics averaged over blocks), so the domain stays the same and only the size
changes. The learned scores alone (fusion weight 1) and with the base fusion
chosen on the same split's dev counterpart are reported as rSum gain over the
base of the same galleries.

``--split dev`` evaluates on Flickr30K dev (blocks of E and 5E; the split has
1,014 images) and selects nothing on it but reports it, for decisions;
``--split test`` evaluates on the COCO 5K test proxy (blocks of E, 5E, 25E with
E = 200), with the fusion selected on COCO dev. About 5 minutes per setting at
3,000 training images on 2 cores, plus a minute per gallery size.

    python benchmarks/gallery_size.py --combo tfidf:minilm --recipe inductive --episodes "200;200,1000" \\
        [--train-images 3000] [--seed 0] [--split dev] [--out benchmarks/results/gallery_size]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: about 5 minutes per episode setting at 3,000 training images on 2 cores, plus a minute per gallery size:
about 15 minutes for the default two settings.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pillargraph.baselines import evaluate_rescored
from pillargraph.data import caption_proxy_bundle
from pillargraph.metrics import evaluate, fold_slices
from pillargraph.rerank import select_fusion_weights
from pillargraph.train import fit_reranker

from benchmarks.common import ProxyTrain, command_line, description, log, peak_rss_gib, variant, write_results

#: Test split and the dev split its fusion is selected on, per --split.
SPLITS = {"dev": ("f30k_dev", "f30k_dev"), "test": ("coco_testall", "coco_dev")}


def galleries(num_images: int, size: int) -> List[np.ndarray]:
    """Disjoint consecutive blocks of ``size`` images (the rest dropped); the whole split when it is that size."""
    count = num_images // size
    return fold_slices(count * size, count) if count else []


def gains(fitted, bundle, fusion, size: int) -> Optional[Dict[str, float]]:
    """rSum gain of the learned scores alone and fused, averaged over the ``size``-image galleries of ``bundle``."""
    blocks = galleries(bundle.num_images, size)
    if not blocks:
        return None
    out = {"galleries": len(blocks), "base": [], "learned": [], "fused": []}
    for idx in blocks:
        test = bundle.subset(torch.as_tensor(idx)) if len(idx) < bundle.num_images else bundle
        scores = fitted.rescore(test, fusion=fusion.as_dict())
        out["base"].append(evaluate(test)["rsum"])
        out["learned"].append(evaluate_rescored(scores["learned"], test)["rsum"])
        out["fused"].append(evaluate_rescored(scores["fused"], test)["rsum"])
    base = float(np.mean(out["base"]))
    return {"galleries": len(blocks), "base_rsum": base, "learned_gain": float(np.mean(out["learned"])) - base,
            "fused_gain": float(np.mean(out["fused"])) - base}


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    data = ProxyTrain(args.combo, args.train_images)
    cross, intra = args.combo.split(":")
    test_name, dev_name = SPLITS[args.split]
    test = caption_proxy_bundle(test_name, cross=cross, intra=intra)
    dev = data.dev if dev_name == "f30k_dev" else caption_proxy_bundle(dev_name, cross=cross, intra=intra)
    rows = []
    for setting in args.episodes.split(";"):
        sizes = [int(x) for x in setting.split(",")]
        recipe = variant(args.recipe).override(episode_images=sizes)
        if args.epochs is not None:
            recipe = recipe.override(train={"epochs": args.epochs})
        fitted = fit_reranker(data.train_for(recipe), data.dev, recipe=recipe, seed=args.seed)
        fusion = select_fusion_weights(fitted.model, dev, fitted.builder, output=fitted.config.fusion_outputs)
        unit = min(sizes)
        row = {"episodes": sizes, "dev_rsum": fitted.result.best_dev_rsum, "fusion": fusion.as_dict(),
               "seconds": round(fitted.seconds, 1), "recipe": recipe.record(), "by_size": {}}
        for mult in args.multiples:
            res = gains(fitted, test, fusion, unit * mult)
            if res is not None:
                row["by_size"][f"{mult}x"] = {"images": unit * mult, **res}
                log(f"  episodes {setting}, galleries of {unit * mult} ({mult}x): {res}")
        rows.append(row)
    return rows


def markdown(payload: Dict[str, Any]) -> str:
    c = payload["config"]
    mults = [f"{m}x" for m in c["multiples"]]
    lines = [f"Command: `{payload['command']}`", "",
             f"Recipe `{c['recipe']}` on {c['combo']}, trained on the first {c['train_images']} Flickr30K-train "
             f"images (seed {c['seed']}) with each episode setting; evaluated on disjoint galleries of 1x, 5x and "
             f"25x the smallest episode size cut from {SPLITS[c['split']][0]} (metrics averaged over galleries; "
             f"fusion chosen on {SPLITS[c['split']][1]}). rSum gain over the base of the same galleries, learned "
             "scores alone / with fusion. Caption proxy (text-to-text), NOT image-text results.", "",
             "| episodes | " + " | ".join(f"{m} (images, galleries)" for m in mults) + " |",
             "|---|" + "---:|" * len(mults)]
    for r in payload["rows"]:
        cells = []
        for m in mults:
            g = r["by_size"].get(m)
            cells.append("-" if g is None else f"{g['learned_gain']:+.2f} / {g['fused_gain']:+.2f} "
                                                f"({g['images']}, {g['galleries']}; base {g['base_rsum']:.1f})")
        lines.append(f"| {','.join(map(str, r['episodes']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combo", default="tfidf:minilm")
    p.add_argument("--recipe", default="inductive", help="a recipe, or a dev-search variant of benchmarks/common.py")
    p.add_argument("--episodes", default="200;200,1000", help="episode-size settings, ';'-separated")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--multiples", default="1,5,25", help="gallery sizes as multiples of the smallest episode")
    p.add_argument("--split", default="dev", choices=sorted(SPLITS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/gallery_size")
    args = p.parse_args(argv)
    args.multiples = [int(x) for x in args.multiples.split(",")]
    variant(args.recipe)
    command = command_line("benchmarks/gallery_size.py", argv)
    payload = {"command": command, "config": vars(args), "rows": run(args), "peak_rss_gib": round(peak_rss_gib(), 2)}
    write_results(args.out, payload, markdown(payload))
    log(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
