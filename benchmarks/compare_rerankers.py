"""Compare every training-free re-ranker on the default synthetic test split.

Builds ``synthetic_splits(2000, 500, 1000, seed=0)`` (test: 1000 images x 5000
captions), uses the train split's embeddings as the query bank (train images
scored against the test captions, train captions against the test images),
runs :func:`pillargraph.compare` over all registered methods with their
published defaults, adds the learned re-ranker (``--learned``: trained here on
the train split and selected on the dev split with the demo's settings, or
``--checkpoint RUN/best.pt``), and writes ``benchmarks/results/compare_rerankers.md`` and
``.json`` with the command at the top.

    python benchmarks/compare_rerankers.py [--learned | --checkpoint RUN/best.pt] [--train 2000] [--test 1000]

Time: about 1.5 minutes at the defaults on 2 cores (the training-free rows of results/compare_rerankers.md
took 77 s together); --learned adds its training (160 s with --epochs 2 there, so about 5 minutes at the
default 4).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import sys
import time
from pathlib import Path

from pillargraph.baselines import QueryBank
from pillargraph.compare import compare
from pillargraph.data.synthetic import synthetic_splits

from benchmarks.common import command_line, description


def learned_rows(args, train, dev, test):
    """Scores of the learned re-ranker as ``compare(extra=...)`` entries (empty without --learned/--checkpoint)."""
    if not (args.learned or args.checkpoint):
        return None, None, None
    from pillargraph.rerank import direction_scores, rerank
    from pillargraph.train import TrainConfig, fit_reranker, model_from_checkpoint
    t0 = time.perf_counter()
    if args.checkpoint:
        model = model_from_checkpoint(args.checkpoint, map_location=args.device or "cpu")
        info = {"checkpoint": args.checkpoint, "fusion": model.fusion_weights}
        scores = {"learned": direction_scores(rerank(model, test, fusion=1.0, device=args.device)),
                  "fused": direction_scores(rerank(model, test, device=args.device))}
    else:
        fitted = fit_reranker(train, dev, {"num_pillars": 32}, {"hidden_channels": 64},
                              TrainConfig(epochs=args.epochs, seed=args.seed), device=args.device)
        info = {"trained_on": "train split", "selected_on": "dev split", "epochs": args.epochs,
                **fitted.settings()}
        scores = fitted.rescore(test, device=args.device)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    # uses the intra matrices and a labelled train split; no bank, not transductive
    needs = {"intra": True, "bank": False, "embeddings": False, "transductive": False}
    label = "pillargraph, trained on the labelled train split (learned scores)"
    label_fused = "pillargraph, trained on the labelled train split (+ dev-selected base fusion)"
    extra = {label: scores["learned"], label_fused: scores["fused"]}
    return extra, {label: needs, label_fused: needs}, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=2000, help="train images (the query bank)")
    p.add_argument("--dev", type=int, default=500, help="dev images (drawn, unused here)")
    p.add_argument("--test", type=int, default=1000, help="test images (5 captions each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: all)")
    p.add_argument("--learned", action="store_true",
                   help="train the learned re-ranker on the train split (dev for selection) and add it")
    p.add_argument("--checkpoint", default=None, help="add the learned re-ranker of this checkpoint")
    p.add_argument("--epochs", type=int, default=4, help="epochs for --learned")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "compare_rerankers"),
                   help="output path without extension (default: benchmarks/results/compare_rerankers)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    train, dev, test = synthetic_splits(args.train, args.dev, args.test, seed=args.seed)
    bank = QueryBank.from_embeddings(test, bank_img_emb=train.img_emb, bank_txt_emb=train.txt_emb)
    t_data = time.perf_counter() - t0
    extra, extra_needs, learned_info = learned_rows(args, train, dev, test)
    report = compare(test, methods=args.methods, bank=bank, device=args.device, extra=extra,
                     extra_needs=extra_needs)
    total = time.perf_counter() - t0
    report.command = command_line("benchmarks/compare_rerankers.py")
    report.config["data"] = {"generator": "pillargraph.data.synthetic.synthetic_splits",
                             "num_train_images": args.train, "num_dev_images": args.dev,
                             "num_test_images": args.test, "captions_per_image": 5,
                             "seed": args.seed,
                             "bank": "train split embeddings via QueryBank.from_embeddings"}
    report.config["seconds"] = {"data": round(t_data, 2), "total": round(total, 2)}
    if learned_info:
        report.config["learned"] = learned_info
    out = Path(args.out)
    report.save(out.with_suffix(".md"), out.with_suffix(".json"))
    print(report.to_markdown())
    print(f"data {t_data:.1f}s, total {total:.1f}s; wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
