"""CLI parity: does `pillargraph train --recipe R` give the model the benchmarks report for the same data?

Writes the first ``--train-images`` of the Flickr30K-train caption proxy, Flickr30K
dev and Flickr30K test as dense bundle files (in a temporary folder, never in the
repository), then trains recipe ``R`` twice with the same seed: through the
command line (``pillargraph train``, then ``pillargraph rerank`` and ``pillargraph
evaluate`` on the test file), and through the benchmarks' path
(``fit_reranker(recipe=...)`` on the bundles in memory, as
``benchmarks/learned_search.py`` and ``benchmarks/caption_proxy.py`` do). Prints and
writes both dev and test rSums and their differences. About twice one training
run (4-8 minutes per recipe at 3,000 images on 2 cores).

    python benchmarks/cli_parity.py --combo tfidf:minilm --recipes inductive,transductive \\
        [--train-images 3000] [--epochs 1] [--seed 0] [--out benchmarks/results/cli_parity]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: about twice one training run per recipe, 4-8 minutes per recipe at 3,000 images on 2 cores: about 10-15
minutes for the default two recipes.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.baselines import evaluate_rescored
from pillargraph.data import caption_proxy_bundle
from pillargraph.train import fit_reranker

from benchmarks.common import ProxyTrain, command_line, description, log, variant, write_results


def cli(*args: str) -> str:
    """Run ``python -m pillargraph ARGS`` (this interpreter), return its stdout; fail loudly."""
    done = subprocess.run([sys.executable, "-m", "pillargraph", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pillargraph {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def through_cli(folder: Path, recipe: str, args: argparse.Namespace) -> Dict[str, float]:
    """Train, re-rank test and evaluate it with the command line."""
    run = folder / f"run_{recipe}"
    flags = ["--recipe", variant(recipe).name, "--seed", str(args.seed)]
    flags += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    out = json.loads(cli("train", "--train", str(folder / "train.npz"), "--dev", str(folder / "dev.npz"),
                         "--out", str(run), *flags))
    cli("rerank", "--checkpoint", str(run / "best.pt"), str(folder / "test.npz"), "--out", str(run / "test.npz"))
    test = json.loads(cli("evaluate", str(run / "test.npz"), "--json"))
    return {"dev_learned": out["best_dev_rsum"], "dev_fused": out["fusion"]["dev_rsum"], "test_fused": test["rsum"]}


def through_api(data: ProxyTrain, test, recipe: str, args: argparse.Namespace) -> Dict[str, float]:
    """The benchmarks' path: fit_reranker with the recipe on the bundles in memory."""
    r = variant(recipe)
    r = r.override(train={"epochs": args.epochs}) if args.epochs is not None else r
    fitted = fit_reranker(data.train_for(r), data.dev, recipe=r, seed=args.seed)
    scores = fitted.rescore(test)
    return {"dev_learned": fitted.result.best_dev_rsum, "dev_fused": fitted.result.fusion["dev_rsum"],
            "test_fused": evaluate_rescored(scores["fused"], test)["rsum"]}


def markdown(payload: Dict[str, Any]) -> str:
    c = payload["config"]
    lines = [f"Command: `{payload['command']}`", "",
             f"{c['combo']}, first {c['train_images']} Flickr30K-train images as one dense bundle, seed {c['seed']}, "
             "Flickr30K dev and test (caption proxy, text-to-text, NOT image-text results). rSum through the "
             "command line and through `fit_reranker(recipe=...)` (the benchmarks' path):", "",
             "| recipe | what | CLI | benchmarks | difference |", "|---|---|---:|---:|---:|"]
    for r in payload["rows"]:
        for key in ("dev_learned", "dev_fused", "test_fused"):
            lines.append(f"| {r['recipe']} | {key.replace('_', ' ')} | {r['cli'][key]:.2f} | {r['api'][key]:.2f} | "
                         f"{r['cli'][key] - r['api'][key]:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combo", default="tfidf:minilm")
    p.add_argument("--recipes", default="inductive,transductive")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/cli_parity")
    args = p.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    for r in recipes:
        variant(r)
    data = ProxyTrain(args.combo, args.train_images, "dense")
    cross, intra = args.combo.split(":")
    test = caption_proxy_bundle("f30k_test", cross=cross, intra=intra)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pillargraph-parity-") as tmp:
        folder = Path(tmp)
        data.emb.bundle().save(folder / "train.npz")
        data.dev.save(folder / "dev.npz")
        test.save(folder / "test.npz")
        for recipe in recipes:
            rows.append({"recipe": recipe, "cli": through_cli(folder, recipe, args),
                         "api": through_api(data, test, recipe, args)})
            log(f"  {recipe}: {rows[-1]}")
    payload = {"command": command_line("benchmarks/cli_parity.py", argv), "config": vars(args), "rows": rows}
    write_results(args.out, payload, markdown(payload))
    log(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
