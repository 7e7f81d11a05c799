"""Layer sweep: the same data and training budget for every reasoning layer, over several seeds.

For each seed a synthetic world (train/dev/test) is drawn; for each layer a
re-ranker is trained on train, selected on dev, and evaluated on test. The
table shows the base test rSum, the re-ranked rSum (learned scores alone, and
fused with the base scores by the dev-selected weights), the gain over the base
as mean +- std over seeds, parameters and training time.

Usage::

    python benchmarks/layers.py --layers neighbor_attention,transformer,gatv2,gcn,sage,gin \\
        [--seeds 0,1,2] [--epochs 2] [--ablations] [--data synthetic|caption-proxy] [--out benchmarks/results/layers]

``--ablations`` adds, for the first layer: no alignment loss, inter-only and
intra-only pillars, and no edge weights. ``--data caption-proxy`` uses the
real-caption proxy of ``pillargraph.data.captions`` (train: COCO 5K test proxy,
dev: Flickr30K dev, test: Flickr30K test; needs the ``bench`` extra and
``../shared/data/captions``); its numbers are caption-proxy results, not
image-text results.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.baselines import evaluate_rescored
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.io import atomic_write_text
from pillargraph.metrics import evaluate
from pillargraph.train import TrainConfig, fit_reranker


def variants(layers, ablations: bool, attend: str):
    def model_kw(name):
        # PyG layers see the graph's overlap edges; the paper's layer attends over the whole
        # neighbourhood (its dense path) unless --attend says otherwise
        mode = attend if attend != "pyg-edges" else ("auto" if name == "neighbor_attention" else "edges")
        return dict(layer=name, attend=mode)
    out = [(name, model_kw(name), {}, {}) for name in layers]
    if ablations:
        first = layers[0]
        kw = model_kw(first)
        out += [(f"{first} / no alignment", kw, {}, dict(alignment=0.0, mirror_contrastive=0.0)),
                (f"{first} / inter-only pillars", kw, dict(anchor="inter"), {}),
                (f"{first} / intra-only pillars", kw, dict(anchor="intra"), {}),
                (f"{first} / no edge weights", dict(kw, use_edge_weight=False), {}, {})]
    return out


def load_data(kind: str, seed: int, args):
    if kind == "synthetic":
        return synthetic_splits(args.train_images, args.dev_images, args.test_images, seed=seed)
    from pillargraph.data import caption_proxy_bundle
    kw = dict(cross=args.cross, intra=args.intra)
    return (caption_proxy_bundle("coco_testall", **kw), caption_proxy_bundle("f30k_dev", **kw),
            caption_proxy_bundle("f30k_test", **kw))


def run_one(split, name, model_kw, builder_kw, train_kw, seed, args):
    train, dev, test = split
    config = TrainConfig(epochs=args.epochs, seed=seed, **train_kw)
    fitted = fit_reranker(train, dev, {"num_pillars": args.num_pillars, **builder_kw},
                          {"hidden_channels": args.hidden, "heads": args.heads, **model_kw}, config,
                          device=args.device)
    model, result, seconds = fitted.model, fitted.result, fitted.seconds
    scores = fitted.rescore(test, device=args.device)
    learned = evaluate_rescored(scores["learned"], test)
    fused = evaluate_rescored(scores["fused"], test)
    return {"variant": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
            "train_s": seconds, "best_epoch": result.best_epoch, "fusion": result.fusion,
            "learned": learned, "fused": fused}


def summarise(runs, bases):
    rows = {}
    for r in runs:
        rows.setdefault(r["variant"], []).append(r)
    table = []
    for name, rs in rows.items():
        gl = [r["learned"]["rsum"] - bases[r["seed"]]["rsum"] for r in rs]
        gf = [r["fused"]["rsum"] - bases[r["seed"]]["rsum"] for r in rs]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        table.append({"variant": name, "seeds": len(rs),
                      "base_rsum": statistics.mean(bases[r["seed"]]["rsum"] for r in rs),
                      "learned_rsum": statistics.mean(r["learned"]["rsum"] for r in rs),
                      "fused_rsum": statistics.mean(r["fused"]["rsum"] for r in rs),
                      "gain_learned_mean": statistics.mean(gl), "gain_learned_std": sd(gl),
                      "gain_fused_mean": statistics.mean(gf), "gain_fused_std": sd(gf),
                      "params": rs[0]["params"], "train_s": statistics.mean(r["train_s"] for r in rs)})
    return table


def markdown(table, command, note):
    lines = [f"Command: `{command}`", "", note, "",
             "| layer / variant | seeds | base rSum | re-ranked rSum (learned) | gain (learned) | "
             "re-ranked rSum (dev-fused) | gain (dev-fused) | params | train time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['variant']} | {t['seeds']} | {t['base_rsum']:.2f} | {t['learned_rsum']:.2f} | "
                     f"{t['gain_learned_mean']:+.2f} ± {t['gain_learned_std']:.2f} | {t['fused_rsum']:.2f} | "
                     f"{t['gain_fused_mean']:+.2f} ± {t['gain_fused_std']:.2f} | {t['params']:,} | "
                     f"{t['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="neighbor_attention,transformer,gatv2,gcn,sage,gin",
                   help="comma-separated names the layer resolver accepts")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--num-pillars", type=int, default=32)
    p.add_argument("--train-images", type=int, default=1000)
    p.add_argument("--dev-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--data", choices=("synthetic", "caption-proxy"), default="synthetic")
    p.add_argument("--cross", default="tfidf", help="caption proxy: cross-modal encoder")
    p.add_argument("--intra", default="minilm", help="caption proxy: intra-modal encoder")
    p.add_argument("--ablations", action="store_true")
    p.add_argument("--attend", default="pyg-edges", choices=("pyg-edges", "auto", "graph", "edges"),
                   help="which node pairs the layers see: 'pyg-edges' (default) gives PyG layers the overlap "
                        "edges and the paper's layer the whole neighbourhood; the others apply to every layer")
    p.add_argument("--single-seed-layers", default="",
                   help="comma-separated layers run with the first seed only (to bound CPU time)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    single = {s.strip() for s in args.single_seed_layers.split(",") if s.strip()}
    command = "python benchmarks/layers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    note = (f"Synthetic data (generator defaults; {args.train_images} train / {args.dev_images} dev / "
            f"{args.test_images} test images, 5 captions each), "
            "test split; gains are re-ranked minus base test rSum, mean ± std over seeds (each seed is a new "
            "world and a new initialisation). Same budget for every layer: "
            f"{args.epochs} epochs, hidden {args.hidden}, {args.num_pillars} pillars per half; layers: "
            f"attend={args.attend} ('pyg-edges': PyG layers pass messages along the overlap edges, with edge "
            "weights where they accept them; the paper's neighbor_attention attends over the whole query graph)."
            if args.data == "synthetic" else
            "Caption-proxy data (real captions, not image-text results): trained on the COCO 5K proxy, "
            "selected on Flickr30K dev, tested on Flickr30K test.")
    runs, bases = [], {}

    def write(final: bool) -> str:
        table = summarise(runs, bases)
        md = markdown(table, command.strip(), note if final else note + " (partial: run in progress)")
        if args.out:
            out = Path(args.out)
            atomic_write_text(out.with_suffix(".md"), md)
            atomic_write_text(out.with_suffix(".json"), json.dumps(
                {"command": command.strip(), "args": vars(args), "complete": final, "table": table,
                 "runs": runs, "bases": bases}, indent=2))
        return md

    for seed in seeds:
        split = load_data(args.data, seed, args)
        bases[seed] = evaluate(split[2])
        for name, model_kw, builder_kw, train_kw in variants(layers, args.ablations, args.attend):
            if name in single and seed != seeds[0]:
                continue
            r = run_one(split, name, model_kw, builder_kw, train_kw, seed, args)
            runs.append(r)
            print(f"seed {seed} {name:40s} base {bases[seed]['rsum']:.2f}  learned {r['learned']['rsum']:.2f}  "
                  f"fused {r['fused']['rsum']:.2f}  ({r['train_s']:.0f} s)", flush=True)
            write(final=False)  # every finished run is kept, even if the sweep is stopped
    print(write(final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
