"""Compare every training-free re-ranker on the default synthetic test split.

Builds ``synthetic_splits(2000, 500, 1000, seed=0)`` (test: 1000 images x 5000
captions), uses the train split's embeddings as the query bank (train images
scored against the test captions, train captions against the test images),
runs :func:`pillargraph.compare` over all registered methods with their
published defaults, and writes ``benchmarks/results/compare_rerankers.md`` and
``.json`` with the command at the top.

    python benchmarks/compare_rerankers.py [--train 2000] [--test 1000] [--seed 0] [--device cpu]
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from pillargraph.baselines import QueryBank
from pillargraph.compare import compare
from pillargraph.data.synthetic import synthetic_splits


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=2000, help="train images (the query bank)")
    p.add_argument("--dev", type=int, default=500, help="dev images (drawn, unused here)")
    p.add_argument("--test", type=int, default=1000, help="test images (5 captions each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: all)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "compare_rerankers"),
                   help="output path without extension (default: benchmarks/results/compare_rerankers)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    train, _, test = synthetic_splits(args.train, args.dev, args.test, seed=args.seed)
    bank = QueryBank.from_embeddings(test, bank_img_emb=train.img_emb, bank_txt_emb=train.txt_emb)
    t_data = time.perf_counter() - t0
    report = compare(test, methods=args.methods, bank=bank, device=args.device)
    total = time.perf_counter() - t0
    report.command = "python " + " ".join(shlex.quote(a) for a in
                                          ["benchmarks/compare_rerankers.py", *sys.argv[1:]])
    report.config["data"] = {"generator": "pillargraph.data.synthetic.synthetic_splits",
                             "num_train_images": args.train, "num_dev_images": args.dev,
                             "num_test_images": args.test, "captions_per_image": 5,
                             "seed": args.seed,
                             "bank": "train split embeddings via QueryBank.from_embeddings"}
    report.config["seconds"] = {"data": round(t_data, 2), "total": round(total, 2)}
    out = Path(args.out)
    report.save(out.with_suffix(".md"), out.with_suffix(".json"))
    print(report.to_markdown())
    print(f"data {t_data:.1f}s, total {total:.1f}s; wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
