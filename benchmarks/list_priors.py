"""Neighbour lists against dense matrices: how far do list-based priors and re-rankings move?

Training-free priors (``prior:<method>`` node features) and the re-rankers that
use them run on neighbour lists as well as on dense bundles; with lists that
hold every item they are equal (tests/graphs/test_priors.py). This measures the
gap at a finite depth on Flickr30K dev (caption proxy):

1. every prior of the recipe, scored from top-``K`` lists and from the dense
   bundle for the same candidates (the graph builder's candidate pairs): mean and
   largest absolute difference of the scores, of their standardised score column,
   and the share of candidates whose rank among their query's candidates changes;
2. a model trained with the recipe on the first ``--train-images`` of the
   Flickr30K-train proxy from a dense bundle and from lists searched within the
   same episodes, each re-ranking dev given dense and as lists: dev rSum of all four.

About 12 minutes with the defaults on 2 cores.

    python benchmarks/list_priors.py --combo tfidf:minilm --recipe transductive [--k 100] \\
        [--train-images 3000] [--out benchmarks/results/list_priors]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: about 12 minutes with the defaults on 2 cores.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph.data import caption_proxy_embeddings
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.graphs.node_features import rank_features
from pillargraph.graphs.priors import is_prior, prior_reranker, prior_scores
from pillargraph.modality import DIRECTIONS
from pillargraph.rerank import evaluate_any, rerank
from pillargraph.train import fit_reranker

from benchmarks.common import ProxyTrain, command_line, description, log, peak_rss_gib, variant, write_results


def prior_gap(builder: PillarGraphBuilder, dense, lists) -> Dict[str, Dict[str, Any]]:
    """Per prior and direction: how its candidate scores from lists differ from the dense ones."""
    out: Dict[str, Dict[str, Any]] = {}
    for group in (g for g in builder.node_features if is_prior(g)):
        method = prior_reranker(group)
        exact, approx = prior_scores(builder.source(dense), method), prior_scores(lists, method)
        out[group] = {}
        for d in DIRECTIONS:
            k = builder.num_candidates(d)
            queries = torch.arange(lists.num_images if d == "i2t" else lists.num_texts)
            cand = lists.topk(d, k)[0]
            a = exact[d].gather(d, queries[:, None].expand_as(cand), cand).double()
            b = approx[d].gather(d, queries[:, None].expand_as(cand), cand).double()
            mask = torch.ones(k, dtype=torch.bool)
            fa, fb = rank_features(a, mask), rank_features(b, mask)
            moved = (a.argsort(1, descending=True).argsort(1) != b.argsort(1, descending=True).argsort(1))
            out[group][d] = {"mean_abs": float((a - b).abs().mean()), "max_abs": float((a - b).abs().max()),
                             "z_mean_abs": float((fa[..., 0] - fb[..., 0]).abs().mean()),
                             "rank_changed_share": float(moved.double().mean()), "candidates": k}
            log(f"  {group} {d}: {out[group][d]}")
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    recipe = variant(args.recipe)
    if args.epochs is not None:
        recipe = recipe.override(train={"epochs": args.epochs})
    cross, intra = args.combo.split(":")
    emb = caption_proxy_embeddings("f30k_dev", cross, intra)
    dev = {"dense": emb.bundle(), "lists": emb.lists(args.k)}
    builder = PillarGraphBuilder(**recipe.builder)
    result: Dict[str, Any] = {"priors": prior_gap(builder, dev["dense"], dev["lists"]), "rsum": {}}
    for form in ("dense", "lists"):
        data = ProxyTrain(args.combo, args.train_images, form, args.k)
        fitted = fit_reranker(data.train_for(recipe), dev["dense"], recipe=recipe, seed=args.seed)
        result["rsum"][f"trained on {form}"] = {
            f"dev {d}": {"base": evaluate_any(dev[d])["rsum"],
                         "learned": evaluate_any(rerank(fitted.model, dev[d], fusion=1.0))["rsum"],
                         "fused": evaluate_any(rerank(fitted.model, dev[d]))["rsum"]} for d in dev}
        log(f"  trained on {form}: {result['rsum'][f'trained on {form}']}")
    result["peak_rss_gib"] = round(peak_rss_gib(), 2)
    return result


def markdown(payload: Dict[str, Any]) -> str:
    c, r = payload["config"], payload["result"]
    lines = [f"Command: `{payload['command']}`", "",
             f"Recipe `{c['recipe']}`, {c['combo']}, Flickr30K dev caption proxy (text-to-text, NOT image-text "
             f"results); lists of depth {c['k']} against the dense bundle.", "",
             "Prior scores of the graphs' candidates (lists vs dense):", "",
             "| prior | direction | candidates | mean abs diff | max abs diff | mean abs diff of the standardised "
             "column | candidates whose rank moved |", "|---|---|---:|---:|---:|---:|---:|"]
    for group, per in r["priors"].items():
        for d, g in per.items():
            lines.append(f"| `{group}` | {d} | {g['candidates']} | {g['mean_abs']:.2e} | {g['max_abs']:.2e} | "
                         f"{g['z_mean_abs']:.3f} | {100 * g['rank_changed_share']:.1f}% |")
    lines += ["", f"Dev rSum (model trained on the first {c['train_images']} Flickr30K-train images, seed "
              f"{c['seed']}; the fusion chosen in training on dense dev):", "",
              "| trained on | dev given as | base | learned | learned + fusion |", "|---|---|---:|---:|---:|"]
    for trained, per in r["rsum"].items():
        for dev, v in per.items():
            lines.append(f"| {trained.split()[-1]} | {dev.split()[-1]} | {v['base']:.2f} | {v['learned']:.2f} | "
                         f"{v['fused']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combo", default="tfidf:minilm")
    p.add_argument("--recipe", default="transductive", help="a recipe, or a dev-search variant of benchmarks/common.py")
    p.add_argument("--k", type=int, default=100, help="list depth")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/list_priors")
    args = p.parse_args(argv)
    variant(args.recipe)
    command = command_line("benchmarks/list_priors.py", argv)
    payload = {"command": command, "config": vars(args), "result": run(args)}
    write_results(args.out, payload, markdown(payload))
    log(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
