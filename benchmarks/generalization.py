"""Generalization across base scorers: one row per combo from ``caption_proxy.py --protocols f30k`` results.

Reads the JSON files that ``benchmarks/caption_proxy.py --protocols f30k`` wrote
(one per combo, or merged) and writes a compact table, one row per combo
(Flickr30K test, caption proxy): the base rSum; each learned recipe's rSum with
its dev-selected base fusion (mean over seeds, sample std, gain over the base);
and the best dev-tuned training-free row, *chosen on Flickr30K dev* (each
method's ``(dev-tuned)`` and ``(dev-tuned + fusion)`` rows, ranked by their dev
rSum), with its test rSum and its need flags; likewise the best one that does not
read all test queries at once. Nothing is chosen on test. Reading the files takes
a second; the runs themselves are ``caption_proxy.py``'s (see its ``--help``).

    python benchmarks/generalization.py RUN.json [RUN.json ...] [--out benchmarks/results/generalization]

Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: a second (it only reads the JSON files); the runs themselves are caption_proxy.py's (see its --help).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks.caption_proxy_data import FLAGS, TUNED, TUNED_FUSED, learned_pairs
from benchmarks.common import PROXY_NOTE, command_line, mean_std, portable_file, write_results

#: The protocol label caption_proxy.py gives its Flickr30K-test result.
F30K = "f30k (f30k)"


def f30k_results(payloads: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The Flickr30K-test results of every payload, one per combo (ValueError on a combo given twice)."""
    out: Dict[str, Dict[str, Any]] = {}
    for payload in payloads:
        for res in payload["results"]:
            if res["protocol"] != F30K:
                continue
            if res["combo"] in out:
                raise ValueError(f"results: combo {res['combo']} appears in two results; pass each once")
            out[res["combo"]] = res
    if not out:
        raise ValueError("results: no f30k protocol result (run caption_proxy.py with --protocols f30k)")
    return list(out.values())


def best_by_dev(res: Dict[str, Any], allow_transductive: bool = True) -> Optional[Dict[str, Any]]:
    """The dev-tuned training-free row with the highest Flickr30K dev rSum (ties: the first, tuned before fused),
    with its test rSum, flags and parameters; ``None`` when no tuned row ran."""
    rows = {r["method"]: r for r in res["table"]["rows"] if r["status"] == "ok"}
    candidates = []
    for method, tuned in sorted(res.get("tuned", {}).items()):
        for label, dev, fused in ((TUNED.format(method), tuned["dev_rsum"], False),
                                  (TUNED_FUSED.format(method), tuned["dev_fused_rsum"], True)):
            row = rows.get(label)
            if row is None or (not allow_transductive and row["needs"].get("transductive")):
                continue
            candidates.append((dev, label, row, tuned, fused))
    if not candidates:
        return None
    dev, label, row, tuned, fused = max(candidates, key=lambda c: c[0])
    return {"method": label, "dev_rsum": dev, "test_rsum": row["metrics"]["rsum"],
            "flags": [f for f in FLAGS if row["needs"].get(f)], "params": tuned["params"],
            "fusion": tuned["fusion"] if fused else None}


def recipe_cells(res: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per recipe: learned + fusion rSum per seed, mean, std, gain; the learned scores alone; training data."""
    base = res["table"]["base"]["rsum"]
    rows = {r["method"]: r for r in res["table"]["rows"] if r["status"] == "ok"}
    infos = res["cases"][0]["learned"]
    out = {}
    for name, alone, fused in learned_pairs(rows):
        per_seed = fused.get("params", {}).get("rsum_per_seed") or [fused["metrics"]["rsum"]]
        mean, std = mean_std(per_seed)
        info = infos.get(name, {}) if name else infos  # older results: one unnamed learned model
        out[name or "learned"] = {"fused_rsum": mean, "fused_std": std, "fused_gain": mean - base, "rsum_per_seed": per_seed,
                     "learned_rsum": alone["metrics"]["rsum"], "transductive": bool(fused["needs"].get("transductive")),
                     "train_images": info.get("train_images"), "train_form": info.get("train_form"),
                     "epochs": (info.get("settings", {}).get("train") or {}).get("epochs"),
                     "seeds": sorted(int(s) for s in info.get("seeds", {}))}
    return out


def table_rows(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per combo: base, recipes, best training-free chosen on dev (any; not transductive)."""
    return [{"combo": res["combo"], "base_rsum": res["table"]["base"]["rsum"], "recipes": recipe_cells(res),
             "best_tf": best_by_dev(res), "best_inductive_tf": best_by_dev(res, allow_transductive=False)}
            for res in results]


def _tf_cell(best: Optional[Dict[str, Any]], base: float) -> str:
    if best is None:
        return "-"
    flags = ", ".join(best["flags"]) or "none"
    return f"{best['method']} {best['test_rsum']:.1f} ({best['test_rsum'] - base:+.1f}; flags: {flags})"


def headline(rows: Sequence[Dict[str, Any]], recipes: Sequence[str]) -> List[str]:
    """Per recipe: in how many combos learned + fusion beats the base and the dev-chosen training-free rows
    that read no more than it does (the non-transductive one for an inductive recipe)."""
    out = []
    for name in recipes:
        cells = [(r, r["recipes"][name]) for r in rows if name in r["recipes"]]
        above = sum(c["fused_rsum"] > r["base_rsum"] for r, c in cells)
        fair = [(c, r["best_tf"] if c["transductive"] else r["best_inductive_tf"]) for r, c in cells]
        beats = sum(b is not None and c["fused_rsum"] > b["test_rsum"] for c, b in fair)
        mean_gain = sum(c["fused_gain"] for _, c in cells) / max(len(cells), 1)
        kind = "any" if cells and cells[0][1]["transductive"] else "not transductive, bank methods included"
        out.append(f"- `{name}`: learned + fusion above the base in {above}/{len(cells)} combos (mean gain "
                   f"{mean_gain:+.1f} rSum); above the dev-chosen training-free row it competes with ({kind}) in "
                   f"{beats}/{len(cells)}.")
    return out


def markdown(payload: Dict[str, Any]) -> str:
    rows, recipes = payload["rows"], payload["recipes"]
    lines = [f"Command: `{payload['command']}`", "", f"**{PROXY_NOTE}.** Flickr30K test (caption proxy), rSum; "
             "learned rows: mean over seeds (sample std after ±) of the recipe with its base fusion selected on "
             "Flickr30K dev; training-free: the dev-tuned row (parameters, and fusion with the base where named) with "
             "the highest **dev** rSum, its test rSum and need flags (intra, bank, embeddings, transductive).", "",
             "Sources: " + "; ".join(f"`{s['path']}` (`{s['command']}`)" for s in payload["sources"]), ""]
    slices = sorted({f"{c['train_images']} train images ({c['train_form']}), {c['epochs']} epoch(s), seeds "
                     f"{','.join(map(str, c['seeds']))}" for r in rows for c in r["recipes"].values()})
    lines += ["Training slice: " + "; ".join(slices) + ".", ""]
    if payload["limits"]:
        lines += [f"**Smoke run: every split cut to its first {', '.join(map(str, payload['limits']))} images.**", ""]
    lines += ["| combo | base | " + " | ".join(f"{n} (learned + fusion)" for n in recipes)
              + " | best training-free (dev-chosen) | best not transductive (dev-chosen) |",
              "|---|---:|" + "---:|" * len(recipes) + "---|---|"]
    for r in rows:
        cells = []
        for n in recipes:
            c = r["recipes"].get(n)
            spread = f"± {c['fused_std']:.1f}" if c is not None and len(c["rsum_per_seed"]) > 1 else "(1 seed)"
            cells.append("-" if c is None else f"{c['fused_rsum']:.1f} ({c['fused_gain']:+.1f}) {spread}")
        lines.append(f"| {r['combo']} | {r['base_rsum']:.1f} | " + " | ".join(cells) + f" | "
                     f"{_tf_cell(r['best_tf'], r['base_rsum'])} | {_tf_cell(r['best_inductive_tf'], r['base_rsum'])} |")
    return "\n".join(lines + ["", "Headline:", ""] + headline(rows, recipes)) + "\n"


def build(paths: Sequence[Path], command: str) -> Dict[str, Any]:
    """The payload of OUT.json: command, sources, recipes in first-seen order and the rows."""
    payloads = [json.loads(Path(p).read_text()) for p in paths]
    rows = table_rows(f30k_results(payloads))
    recipes = list(dict.fromkeys(n for r in rows for n in r["recipes"]))
    limits = sorted({pl["config"]["limit"] for pl in payloads if pl["config"].get("limit")})
    return {"command": command, "note": PROXY_NOTE, "recipes": recipes, "rows": rows, "limits": limits,
            "sources": [{"path": portable_file(p), "command": pl["command"]} for p, pl in zip(paths, payloads)]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="caption_proxy.py JSON files with an f30k result")
    p.add_argument("--out", default="benchmarks/results/generalization", help="output path without extension")
    args = p.parse_args(argv)
    missing = [str(x) for x in args.runs if not x.is_file()]
    if missing:
        p.error(f"runs: no such file: {', '.join(missing)}")
    try:
        payload = build(args.runs, command_line("benchmarks/generalization.py", argv))
    except (ValueError, KeyError) as err:
        p.error(str(err))
    write_results(args.out, payload, markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
