"""Base rSum of caption-proxy combos before any re-ranking: what each cross-modal scorer gives on its own.

For every combo ``CROSS:INTRA`` and split, ``pillargraph.metrics.evaluate`` on
``caption_proxy_embeddings(split, CROSS, INTRA).bundle()``; ``coco_1k_folds`` is
the COCO 5K proxy cut into 5 folds of 1,000 images, evaluated one by one and
averaged (the COCO 1K protocol). The base depends on CROSS alone; INTRA is built
too, as every re-ranker would read it. Writes ``OUT.md`` (command first) and
``OUT.json``. Uses cached encodings where there are some (MiniLM of a 5,000-caption
split takes about a minute on 2 cores otherwise).

    python benchmarks/base_scorers.py [--combos bm25:minilm,lsa:minilm,tfidf:tfidf,tfidf:minilm,minilm:minilm]
        [--splits f30k_dev,f30k_test,coco_test,coco_1k_folds] [--out benchmarks/results/base_scorers]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: about 5 minutes at the defaults on 2 cores once the encodings are cached (estimated: base scoring only,
no training; not recorded in results/base_scorers.md); each uncached MiniLM split adds about a minute per
5,000 captions.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import the encoders

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pillargraph.data import caption_proxy_embeddings
from pillargraph.metrics import evaluate, fold_slices

from benchmarks.common import command_line, description, log, parse_combo, write_results

DEFAULT_COMBOS = "bm25:minilm,lsa:minilm,tfidf:tfidf,tfidf:minilm,minilm:minilm"
#: The pseudo-split of the COCO 1K protocol: the COCO 5K proxy in 5 folds, metrics averaged.
COCO_FOLDS = "coco_1k_folds"
DEFAULT_SPLITS = f"f30k_dev,f30k_test,coco_test,{COCO_FOLDS}"
KEYS = ("rsum", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
SCORERS = {
    "minilm": "cosine of all-MiniLM-L6-v2 sentence embeddings (384-d)",
    "tfidf": "cosine of raw TF-IDF vectors (sublinear TF, smoothed IDF; fitted on the dev captions)",
    "lsa": "cosine of TF-IDF reduced to 256 dimensions by truncated SVD (fitted on the dev captions)",
    "bm25": "BM25 of the anchor (query) against the text (document), k1 1.5, b 0.75, English stop words "
            "(statistics of the dev captions), over the largest dev self-score",
}


def base_metrics(combo: str, split: str) -> Dict[str, float]:
    """Base metrics of one combo on one split (``coco_1k_folds``: the mean over the 5 COCO 1K folds)."""
    cross, intra = parse_combo(combo, "--combos")
    if split != COCO_FOLDS:
        return {k: evaluate(caption_proxy_embeddings(split, cross, intra).bundle())[k] for k in KEYS}
    emb = caption_proxy_embeddings("coco_testall", cross, intra)
    folds = [evaluate(emb.subset(idx).bundle()) for idx in fold_slices(emb.num_images, 5)]
    return {k: float(np.mean([f[k] for f in folds])) for k in KEYS}


def table(rows: List[Dict[str, Any]], splits: List[str], command: str) -> str:
    """The Markdown report: command, what each scorer is, rSum per combo and split, R@1 below."""
    out = [f"Command: `{command}`", "",
           "Base scores of the caption proxy (each image stood in for by its first caption; "
           "**text-to-text retrieval, NOT image-text results**). The base depends on the cross-modal "
           "scorer (CROSS) alone. `coco_1k_folds`: the COCO 5K proxy in 5 folds of 1,000 images, averaged; "
           "`coco_test` is its first fold.", "",
           "| scorer | what it is |", "|---|---|"]
    out += [f"| `{name}` | {text} |" for name, text in SCORERS.items()]
    out += ["", "rSum (i2t R@1 / t2i R@1):", "",
            "| combo | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for row in rows:
        cells = [f"{m['rsum']:.1f} ({m['i2t_r1']:.1f} / {m['t2i_r1']:.1f})" for m in
                 (row["metrics"][s] for s in splits)]
        out.append(f"| {row['combo']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combos", default=DEFAULT_COMBOS)
    p.add_argument("--splits", default=DEFAULT_SPLITS)
    p.add_argument("--out", default="benchmarks/results/base_scorers")
    args = p.parse_args(argv)
    combos = [c.strip() for c in args.combos.split(",") if c.strip()]
    for c in combos:
        parse_combo(c, "--combos")  # a typo fails before any encoding
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    command = command_line("benchmarks/base_scorers.py", argv)
    rows = []
    for combo in combos:
        row: Dict[str, Any] = {"combo": combo, "metrics": {}, "seconds": {}}
        for split in splits:
            t0 = time.perf_counter()
            row["metrics"][split] = base_metrics(combo, split)
            row["seconds"][split] = round(time.perf_counter() - t0, 1)
            log(f"{combo} {split}: rSum {row['metrics'][split]['rsum']:.2f} ({row['seconds'][split]}s)")
        rows.append(row)
    write_results(args.out, {"command": command, "splits": splits, "rows": rows}, table(rows, splits, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
