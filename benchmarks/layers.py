"""Layer sweep: the same data and training budget for every reasoning layer, over several seeds.

For each layer (and, with ``--ablations``, four ablations of the first layer: no
alignment loss, inter-only and intra-only pillars, no edge weights) a re-ranker
is trained on a train split, selected on dev (best epoch, then the base fusion)
and evaluated on test. The table shows per layer the dev rSum (learned + fusion),
the base and re-ranked test rSum (learned scores alone, and fused with the base by
the dev-selected weights), the gains over the base as mean ± std over seeds,
parameters and training time, and names the best layer on dev. ``OUT.png``: test
gain (dev-fused) per layer with std error bars, one panel per combo.

``--data``:

* ``synthetic`` (default): one synthetic world per seed (train/dev/test),
  hidden 64, 2 epochs, 32 pillars; 10-20 s per run on 2 cores, about 9 minutes
  for 8 layers x 3 seeds.
* ``f30k``: the caption proxy of each ``--combos`` (real captions): train on the
  first ``--train-images`` images of the Flickr30K-train proxy with ``--recipe``
  (default ``inductive``; only the layer, or the ablated setting, is changed:
  ``Recipe.override``), select on Flickr30K dev, test on Flickr30K test. One run
  at 3,000 images takes about 2 minutes with ``--epochs 1`` and 5 with the
  recipe's 3 epochs (one thread on the shared 2-core machine; every layer within
  40% of neighbor_attention with ``--attend pyg-edges``), so the sweep of 8 layers
  + 4 ablations x 2 combos x 3 seeds (72 runs) takes about 2.5 hours with
  ``--epochs 1`` and 6 at the recipe's epochs.
* ``caption-proxy``: the earlier protocol (train on the COCO 5K proxy, select on
  Flickr30K dev, test on Flickr30K test; ``--cross``/``--intra``).

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

    python benchmarks/layers.py [--data f30k --combos tfidf:minilm,minilm:minilm --recipe inductive --epochs 1]
        [--layers neighbor_attention,...] [--seeds 0,1,2] [--ablations] [--train-images N] [--limit N]
        [--out benchmarks/results/layers] [--resume]

``--resume`` extends the sweep in ``OUT.json`` (more seeds, combos or layers under the same budget): its runs
are kept, only the missing (combo, layer, seed) runs are trained, and the file records every command that
added runs.

Time: about 9 minutes at the defaults on 2 cores (synthetic data, 8 layers x 3 seeds, 10-20 s per run); --data
f30k: about 2-5 minutes per run at 3,000 images.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pillargraph.baselines import evaluate_rescored
from pillargraph.data.synthetic import synthetic_splits
from pillargraph.metrics import evaluate
from pillargraph.train import Recipe, TrainConfig, fit_reranker

from benchmarks.common import (PROXY_NOTE, ProxyTrain, command_line, f30k_split, log, mean_std, parse_combo,
                               parse_list, recipe_for, save_figure, write_results)

LAYERS = "neighbor_attention,transformer,gatv2,gat,gcn,sage,gin,graph"
#: ``--data synthetic`` sizes and budget unless given.
SYNTHETIC = {"train_images": 1000, "epochs": 2, "hidden": 64, "heads": 4, "num_pillars": 32}
ABLATIONS = (("no alignment", {"train": {"alignment": 0.0, "mirror_contrastive": 0.0}}),
             ("inter-only pillars", {"builder": {"anchor": "inter"}}),
             ("intra-only pillars", {"builder": {"anchor": "intra"}}),
             ("no edge weights", {"model": {"use_edge_weight": False}}))


def attend_mode(attend: Optional[str], layer: str) -> Optional[str]:
    """The ``attend`` setting of ``layer``: ``'pyg-edges'`` gives PyG layers the overlap edges and the paper's
    layer the whole neighbourhood (``'auto'``); ``None`` keeps the model's default."""
    if attend == "pyg-edges":
        return "auto" if layer == "neighbor_attention" else "edges"
    return attend


def variants(layers: Sequence[str], ablations: bool, attend: Optional[str]) -> List[Tuple[str, Dict[str, Dict]]]:
    """``(name, {part: changes})`` per layer, then the ablations of the first layer; parts are ``builder``,
    ``model`` and ``train``."""
    def model_kw(name: str) -> Dict[str, Any]:
        mode = attend_mode(attend, name)
        return {"layer": name, **({"attend": mode} if mode is not None else {})}
    out = [(name, {"model": model_kw(name)}) for name in layers]
    if ablations:
        first = layers[0]
        for what, change in ABLATIONS:
            parts = {"model": dict(model_kw(first), **change.get("model", {}))}
            parts.update({k: v for k, v in change.items() if k != "model"})
            out.append((f"{first} / {what}", parts))
    return out


def synthetic_data(seed: int, args) -> Tuple[Any, Any, Any]:
    """``--data synthetic``: train, dev and test splits of the seed's world."""
    return synthetic_splits(args.train_images, args.dev_images, args.test_images, seed=seed)


def coco_transfer_data(args) -> Tuple[Any, Any, Any]:
    """``--data caption-proxy``: the COCO 5K proxy (train), Flickr30K dev and test."""
    from pillargraph.data import caption_proxy_bundle
    kw = dict(cross=args.cross, intra=args.intra)
    return (caption_proxy_bundle("coco_testall", **kw), caption_proxy_bundle("f30k_dev", **kw),
            caption_proxy_bundle("f30k_test", **kw))


def fit_settings(parts: Dict[str, Dict], seed: int, args):
    """``fit_reranker`` keywords of a variant in the synthetic / caption-proxy modes (their own fixed budget)."""
    return dict(builder={"num_pillars": args.num_pillars, **parts.get("builder", {})},
                model={"hidden_channels": args.hidden, "heads": args.heads, **parts.get("model", {})},
                config=TrainConfig(epochs=args.epochs, seed=seed, **parts.get("train", {})))


def variant_recipe(base: Recipe, parts: Dict[str, Dict]) -> Recipe:
    """``base`` with a variant's changes (``--data f30k``)."""
    return base.override(**{k: v for k, v in parts.items() if v})


def measure(fitted, test, name: str, seed: int, combo: str) -> Dict[str, Any]:
    """One run's record: dev rSum (learned, and learned + fusion), test rSum (base, learned, fused)."""
    scores = fitted.rescore(test)
    fusion = fitted.result.fusion or {}
    return {"combo": combo, "variant": name, "seed": seed, "params": sum(p.numel() for p in fitted.model.parameters()),
            "train_s": fitted.seconds, "best_epoch": fitted.result.best_epoch, "fusion": fusion,
            "dev_learned_rsum": fitted.result.best_dev_rsum, "dev_fused_rsum": fusion.get("dev_rsum"),
            "dev_base_rsum": fusion.get("base_rsum"), "base": evaluate(test),
            "learned": evaluate_rescored(scores["learned"], test), "fused": evaluate_rescored(scores["fused"], test)}


#: The flags that decide a run's result: a resumed sweep must have them as the sweep it extends had them.
RUN_SETTINGS = ("data", "recipe", "epochs", "train_images", "limit", "hidden", "heads", "num_pillars", "dev_images",
                "test_images", "cross", "intra", "attend", "device")


def resumed(args) -> Tuple[List[str], List[Dict[str, Any]]]:
    """``--resume``: the commands and runs of the sweep in ``OUT.json`` (none if there is no such file yet).

    Raises:
        ValueError: the file is not a layer sweep, or a flag of :data:`RUN_SETTINGS` differs (named).
    """
    path = Path(args.out).with_suffix(".json")
    if not path.exists():
        return [], []
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or "runs" not in payload or "args" not in payload:
        raise ValueError(f"--resume: {path} is not the JSON of a layer sweep")
    mine = vars(args)
    for key in RUN_SETTINGS:
        if payload["args"].get(key) != mine.get(key):
            raise ValueError(f"--resume: {path} was run with {key}={payload['args'].get(key)!r}, this command has "
                             f"{mine.get(key)!r}; runs with other settings cannot share a table")
    return list(payload.get("commands") or [payload["command"]]), list(payload["runs"])


def sweep(args, done: List[Dict[str, Any]], write) -> None:
    """Every (combo, seed, variant) run not already in ``done`` (a resumed sweep), appended to ``done``;
    ``write()`` after each."""
    single = set(parse_list(args.single_seed_layers, "--single-seed-layers")) if args.single_seed_layers else set()
    todo = variants(args.layers, args.ablations, args.attend)
    finished = {(r["combo"], r["variant"], r["seed"]) for r in done}
    labels = {"synthetic": "synthetic", "caption-proxy": f"{args.cross}:{args.intra}"}
    for combo in (args.combos if args.data == "f30k" else [labels[args.data]]):
        if args.data == "f30k":
            data = ProxyTrain(combo, args.train_images)
            dev, test = f30k_split(combo, "dev", args.limit), f30k_split(combo, "test", args.limit)
            sizes = {k: v for k, v in (("hidden_channels", args.hidden), ("heads", args.heads)) if v is not None}
            base = recipe_for(args.recipe, args.epochs).override(model=sizes)
        for seed in args.seeds:
            if args.data != "f30k":
                train, dev, test = synthetic_data(seed, args) if args.data == "synthetic" else coco_transfer_data(args)
            for name, parts in todo:
                if (name in single and seed != args.seeds[0]) or (combo, name, seed) in finished:
                    continue
                if args.data == "f30k":
                    recipe = variant_recipe(base, parts)
                    fitted = fit_reranker(data.train_for(recipe), dev, recipe=recipe, seed=seed,
                                          device=args.device, episode_seed=data.episode_seed)
                else:
                    fitted = fit_reranker(train, dev, device=args.device, **fit_settings(parts, seed, args))
                r = measure(fitted, test, name, seed, combo)
                done.append(r)
                log(f"{combo} seed {seed} {name:40s} dev {r['dev_fused_rsum']:.2f}  test base {r['base']['rsum']:.2f}"
                    f"  learned {r['learned']['rsum']:.2f}  fused {r['fused']['rsum']:.2f}  ({r['train_s']:.0f} s)")
                write(final=False)  # every finished run is kept, even if the sweep is stopped


# ------------------------------------------------------------------ tables
def summarise(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (combo, variant): means and sample stds over seeds of dev and test rSum and test gains."""
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["combo"], r["variant"]), []).append(r)
    table = []
    for (combo, name), rs in groups.items():
        row = {"combo": combo, "variant": name, "seeds": len(rs), "params": rs[0]["params"]}
        for key, values in (("dev_fused", [r["dev_fused_rsum"] for r in rs]),
                            ("dev_learned", [r["dev_learned_rsum"] for r in rs]),
                            ("base", [r["base"]["rsum"] for r in rs]),
                            ("learned", [r["learned"]["rsum"] for r in rs]), ("fused", [r["fused"]["rsum"] for r in rs]),
                            ("gain_learned", [r["learned"]["rsum"] - r["base"]["rsum"] for r in rs]),
                            ("gain_fused", [r["fused"]["rsum"] - r["base"]["rsum"] for r in rs]),
                            ("train_s", [r["train_s"] for r in rs])):
            if all(v is not None for v in values):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        table.append(row)
    return table


def paired_gap(runs: Sequence[Dict[str, Any]], layer: str, reference: str) -> Optional[Dict[str, float]]:
    """Dev rSum (learned + fusion) of ``layer`` minus ``reference`` over the (combo, seed) pairs both ran: mean,
    standard error (0 for one pair) and the number of pairs; ``None`` without a pair."""
    dev = {(r["combo"], r["seed"], r["variant"]): r["dev_fused_rsum"] for r in runs}
    gaps = [dev[(c, s, layer)] - v for (c, s, name), v in dev.items()
            if name == reference and (c, s, layer) in dev and v is not None and dev[(c, s, layer)] is not None]
    if not gaps:
        return None
    mean, std = mean_std(gaps)
    return {"mean": mean, "se": std / len(gaps) ** 0.5, "pairs": len(gaps)}


def best_on_dev(table: Sequence[Dict[str, Any]], layers: Sequence[str],
                runs: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Per combo and averaged over combos: the layer (ablations excluded) with the highest mean dev rSum
    (learned + fusion), and that of the first layer (the recipe's) for comparison; with ``runs``, also the
    winner's :func:`paired_gap` to the reference and whether it is clear of the seed noise (above 2 standard
    errors, with at least 2 pairs)."""
    rows = [t for t in table if t["variant"] in layers and "dev_fused_mean" in t]
    out: Dict[str, Any] = {"per_combo": {}, "reference": layers[0]}
    combos = list(dict.fromkeys(t["combo"] for t in rows))
    for combo in combos:
        here = {t["variant"]: t["dev_fused_mean"] for t in rows if t["combo"] == combo}
        best = max(here, key=here.get)
        out["per_combo"][combo] = {"best": best, "dev": here[best], "reference_dev": here.get(layers[0])}
    complete = [name for name in layers if all(any(t["variant"] == name and t["combo"] == c for t in rows)
                                               for c in combos)]
    if complete:
        mean = {n: sum(t["dev_fused_mean"] for t in rows if t["variant"] == n) / len(combos) for n in complete}
        best = max(mean, key=mean.get)
        out["overall"] = {"best": best, "dev": mean[best], "reference_dev": mean.get(layers[0]),
                          "beats_reference": best != layers[0]}
        gap = paired_gap(runs, best, layers[0]) if best != layers[0] else None
        if gap is not None:
            out["overall"]["gap"] = dict(gap, clear=gap["pairs"] >= 2 and gap["mean"] > 2 * gap["se"])
    return out


def best_lines(best: Dict[str, Any]) -> List[str]:
    """:func:`best_on_dev` in words, one line per combo and one for the mean."""
    ref = best["reference"]
    lines = [f"- {combo}: best layer on dev {b['best']} ({b['dev']:.2f}); {ref} {b['reference_dev']:.2f}"
             if b["reference_dev"] is not None else f"- {combo}: best layer on dev {b['best']} ({b['dev']:.2f})"
             for combo, b in best["per_combo"].items()]
    o = best.get("overall")
    if o:
        verdict = (f"{o['best']} beats the reference {ref} on dev" if o["beats_reference"]
                   else f"no layer beats the reference {ref} on dev")
        lines.append(f"- mean over combos: {o['best']} {o['dev']:.2f}"
                     + (f", {ref} {o['reference_dev']:.2f}" if o["beats_reference"] and o["reference_dev"] is not None
                        else "") + f"; {verdict}.")
        gap = o.get("gap")
        if gap:
            lines.append(f"- paired over {gap['pairs']} (combo, seed) runs, {o['best']} minus {ref} on dev: "
                         f"{gap['mean']:+.2f} ± {gap['se']:.2f} (standard error); "
                         + ("clear of the seed noise (above 2 standard errors)." if gap["clear"] else
                            "within the seed noise (not above 2 standard errors)."))
    return lines


def _pm(row: Dict[str, Any], key: str, signed: bool = False) -> str:
    if f"{key}_mean" not in row:
        return "-"
    mean = f"{row[f'{key}_mean']:{'+' if signed else ''}.2f}"
    return mean if row.get("seeds", 2) < 2 else f"{mean} ± {row[f'{key}_std']:.2f}"  # no spread from one seed


def markdown(table: Sequence[Dict[str, Any]], best: Dict[str, Any], command: str, note: str) -> str:
    """OUT.md: the command, the note, the table and the best layer on dev."""
    lines = [f"Command: `{command}`", "", note, "",
             "| combo | layer / variant | seeds | dev rSum (learned + fusion) | test base | test rSum (learned) | "
             "gain (learned) | test rSum (dev-fused) | gain (dev-fused) | params | train time (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['combo']} | {t['variant']} | {t['seeds']} | {_pm(t, 'dev_fused')} | {t['base_mean']:.2f} | "
                     f"{_pm(t, 'learned')} | {_pm(t, 'gain_learned', True)} | {_pm(t, 'fused')} | "
                     f"{_pm(t, 'gain_fused', True)} | {t['params']:,} | {t['train_s_mean']:.0f} |")
    return "\n".join(lines + ["", "Best layer on dev (learned + fusion, mean over seeds; selection on dev only):", ""]
                     + best_lines(best)) + "\n"


def plot(table: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    """Test gain (dev-fused) per variant with std error bars, one panel per combo."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    combos = list(dict.fromkeys(t["combo"] for t in table))
    fig, axes = plt.subplots(1, len(combos), figsize=(6 * len(combos), 4.5), squeeze=False)
    for ax, combo in zip(axes[0], combos):
        rows = [t for t in table if t["combo"] == combo]
        x = range(len(rows))
        ax.bar(x, [t["gain_fused_mean"] for t in rows], yerr=[t["gain_fused_std"] for t in rows], capsize=3,
               color=["tab:orange" if "/" not in t["variant"] else "tab:gray" for t in rows])
        ax.set_xticks(list(x), [t["variant"] for t in rows], rotation=40, ha="right", fontsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("test rSum gain over base (dev-fused)")
        ax.set_title(f"{combo} (base {rows[0]['base_mean']:.1f})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def describe(args) -> Tuple[str, str]:
    """The note under the command, and the figure title."""
    if args.data == "synthetic":
        return (f"Synthetic data (generator defaults; {args.train_images} train / {args.dev_images} dev / "
                f"{args.test_images} test images, 5 captions each), one world per seed; gains are re-ranked minus base "
                f"test rSum, mean ± std over seeds (sample std). Same budget for every layer: {args.epochs} epochs, "
                f"hidden {args.hidden}, {args.num_pillars} pillars per half; attend={args.attend} ('pyg-edges': PyG "
                "layers pass messages along the overlap edges, the paper's neighbor_attention attends over the whole "
                "query graph).", "Synthetic data (not image-text results)")
    if args.data == "caption-proxy":
        return (f"{PROXY_NOTE}. Trained on the COCO 5K proxy ({args.cross}:{args.intra}), selected on Flickr30K dev, "
                "tested on Flickr30K test.", PROXY_NOTE)
    recipe = recipe_for(args.recipe, args.epochs)
    return (f"**{PROXY_NOTE}.** Recipe `{args.recipe}` ({recipe.describe()}) with only the layer (or the ablated "
            f"setting) changed; trained on the first {args.train_images} Flickr30K-train proxy images, epoch and fusion "
            f"selected on Flickr30K dev, tested on Flickr30K test; same budget for every layer; attend={args.attend} "
            "('pyg-edges': PyG layers pass messages along the overlap edges, the paper's neighbor_attention attends "
            "over the whole query graph; 'auto': every attention layer attends over the whole graph); mean ± sample "
            "std over seeds." + (f" **Smoke run: dev and test cut to {args.limit} images.**"
                                               if args.limit else ""), f"Layer sweep, Flickr30K test. {PROXY_NOTE}")


def check_args(args) -> None:
    """Fill the mode's defaults and parse the lists in place; ValueError naming the flag."""
    args.layers = parse_list(args.layers, "--layers")
    args.seeds = parse_list(args.seeds, "--seeds", int)
    if args.data == "f30k":
        args.combos = [f"{c}:{i}" for c, i in (parse_combo(x, "--combos") for x in parse_list(args.combos, "--combos"))]
        args.train_images = args.train_images or 3000
        try:
            recipe_for(args.recipe)
        except ValueError as err:
            raise ValueError(f"--recipe: {err}") from None
        if args.num_pillars is not None:
            raise ValueError("--num-pillars: the f30k mode takes the recipe's pillars")
    else:
        for key, value in SYNTHETIC.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.limit is not None:
            raise ValueError("--limit: only with --data f30k")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs: expected at least 1")
    if args.resume and not args.out:
        raise ValueError("--resume: needs --out (the sweep to extend)")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("synthetic", "f30k", "caption-proxy"), default="synthetic")
    p.add_argument("--layers", default=LAYERS, help="comma-separated names the layer resolver accepts; the first "
                                                    "is the reference (the recipe's) and the one ablated")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ablations", action="store_true")
    p.add_argument("--combos", default="tfidf:minilm,minilm:minilm", help="f30k: comma-separated CROSS:INTRA")
    p.add_argument("--recipe", default="inductive", help="f30k: the recipe whose layer is swapped")
    p.add_argument("--epochs", type=int, default=None, help="(default: synthetic 2; f30k the recipe's)")
    p.add_argument("--train-images", type=int, default=None, help="(default: synthetic 1000; f30k 3000)")
    p.add_argument("--limit", type=int, default=None, help="f30k: cut dev and test to N images (smoke runs)")
    p.add_argument("--hidden", type=int, default=None, help="(default: synthetic 64; f30k the recipe's)")
    p.add_argument("--heads", type=int, default=None, help="(default: synthetic 4; f30k the recipe's)")
    p.add_argument("--num-pillars", type=int, default=None, help="synthetic / caption-proxy (default 32)")
    p.add_argument("--dev-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--cross", default="tfidf", help="caption-proxy: cross-modal encoder")
    p.add_argument("--intra", default="minilm", help="caption-proxy: intra-modal encoder")
    p.add_argument("--attend", default="pyg-edges", choices=("pyg-edges", "auto", "graph", "edges"),
                   help="which node pairs the layers see: 'pyg-edges' (default) gives the PyG layers the overlap "
                        "edges and the paper's layer the whole neighbourhood; 'auto' is the model's default (every "
                        "attention layer sees the whole query graph: transformer, gatv2 and gat then train 6-7x "
                        "slower on CPU); the others apply to every layer")
    p.add_argument("--single-seed-layers", default="",
                   help="comma-separated variants run with the first seed only (to bound CPU time)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write OUT.md, OUT.json and OUT.png")
    p.add_argument("--resume", action="store_true",
                   help="extend the sweep in OUT.json: keep its runs, run only the (combo, layer, seed) it lacks; the "
                        "run-deciding flags must match (the file then records every command that added runs)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        p.error(str(err))
    try:
        commands, runs = resumed(args) if args.resume else ([], [])
    except ValueError as err:
        p.error(str(err))
    commands.append(command_line("benchmarks/layers.py", argv))
    command = " ; ".join(commands)
    note, title = describe(args)

    def write(final: bool) -> str:
        table = summarise(runs)
        best = best_on_dev(table, args.layers, runs)
        md = markdown(table, best, command, note if final else note + " (partial: run in progress)")
        if args.out:
            write_results(args.out, {"command": command, "commands": commands, "args": vars(args), "complete": final,
                                     "table": table, "best_on_dev": best, "runs": runs}, md)
            plot(table, Path(args.out).with_suffix(".png"), title)
        return md

    sweep(args, runs, write)
    print(write(final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
