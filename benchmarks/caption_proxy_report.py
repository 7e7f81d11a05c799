"""Caption-proxy benchmark, report: the markdown (summary, honest reading, one table per combo and protocol,
seeds, multi-positive view, dev tuning and stages), the rSum-change figure, merging of earlier runs, and the
``OUT.json``/``OUT.md``/``OUT.png`` files.

Used by ``benchmarks/caption_proxy.py`` (the entry point; see its ``--help``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from benchmarks.caption_proxy_data import FLAGS, PAPER_PROTOCOLS, RECALLS, is_learned, learned_pairs
from benchmarks.common import save_figure, write_results


# ------------------------------------------------------------------ reporting
def _fmt_flag(v) -> str:
    return "?" if v is None else ("yes" if v else "-")


def _ok_rows(table: Dict) -> List[Dict]:
    return [r for r in table["rows"] if r["status"] == "ok"]


def _training_free(table: Dict) -> List[Dict]:
    return [r for r in _ok_rows(table) if not is_learned(r["method"])]


def summary_lines(res: Dict) -> List[Dict[str, Any]]:
    """One summary per learned recipe of a result: its rows against the base and the training-free rows."""
    t = res["table"]
    rows = {r["method"]: r for r in _ok_rows(t)}
    tf = sorted(_training_free(t), key=lambda r: -r["metrics"]["rsum"])
    best = tf[0] if tf else None
    out = []
    for name, alone, fused_row in learned_pairs(rows):
        fused = fused_row["metrics"]["rsum"]
        transductive = bool(fused_row["needs"].get("transductive"))
        # the rows that read no more than this recipe: no bank, and transductive only if it is
        fair = [r for r in tf if not r["needs"].get("bank") and (not r["needs"].get("transductive") or transductive)]
        inductive_tf = [r for r in tf if not r["needs"].get("transductive")]  # bank methods included
        out.append({"recipe": name, "base": t["base"]["rsum"], "learned": alone["metrics"]["rsum"], "fused": fused,
                    "best_tf": best["method"] if best else None,
                    "best_tf_rsum": best["metrics"]["rsum"] if best else None,
                    "best_inductive_tf": inductive_tf[0]["method"] if inductive_tf else None,
                    "best_inductive_tf_rsum": inductive_tf[0]["metrics"]["rsum"] if inductive_tf else None,
                    "tf_above_fused": [r["method"] for r in tf if r["metrics"]["rsum"] > fused],
                    "tf_same_flags_above_fused": [r["method"] for r in fair if r["metrics"]["rsum"] > fused],
                    "learned_transductive": transductive})
    return out


def seed_lines(res: Dict) -> List[str]:
    """Per-seed rSum of every learned row (mean over the result's test cases) and their spread."""
    out = []
    labels = [r["method"] for r in res["cases"][0]["report"]["rows"] if is_learned(r["method"])]
    for label in labels:
        per_case = [next(r for r in c["report"]["rows"] if r["method"] == label)["params"].get("rsum_per_seed")
                    for c in res["cases"]]
        if not per_case or per_case[0] is None:
            return []
        seeds = np.mean(np.asarray(per_case, dtype=float), axis=0)
        out.append(f"- {label}: rSum per seed " + ", ".join(f"{x:.2f}" for x in seeds)
                   + f" (mean {seeds.mean():.2f}, std {seeds.std():.2f}, range {seeds.max() - seeds.min():.2f})")
    return ["", "Seeds:", ""] + out


def multi_positive_lines(res: Dict) -> List[str]:
    """ECCV Caption and CxC metrics of every row (COCO 5K caption proxy only)."""
    case = res["cases"][0]["report"]
    base = case["config"].get("base_multi_positive")
    if base is None:
        return []
    keys = ("eccv_map_at_r_i2t", "eccv_map_at_r_t2i", "eccv_rprecision_i2t", "eccv_rprecision_t2i",
            "eccv_i2t_r1", "eccv_t2i_r1", "cxc_i2t_r1", "cxc_t2i_r1")
    out = ["", "Multi-positive view (ECCV Caption and CxC positives of MS-COCO 5K, mapped onto the caption "
           "proxy with anchor 0: anchor captions leave the gallery and drop out as positives; computed by "
           "`pillargraph.data.coco5k_eccv_cxc`, checked against `eccv_caption.Metrics`):", "",
           "| method | ECCV mAP@R i2t | ECCV mAP@R t2i | ECCV R-P i2t | ECCV R-P t2i | ECCV R@1 i2t | "
           "ECCV R@1 t2i | CxC R@1 i2t | CxC R@1 t2i |", "|---|" + "---:|" * len(keys)]
    out.append("| base | " + " | ".join(f"{base[k]:.2f}" for k in keys) + " |")
    for r in case["rows"]:
        mp = r.get("params", {}).get("multi_positive")
        if mp:
            out.append(f"| {r['method']} | " + " | ".join(f"{mp[k]:.2f}" for k in keys) + " |")
    return out


def tuning_lines(res: Dict) -> List[str]:
    """What each training-free method's dev tuning searched and chose."""
    tuned = res.get("tuned")
    if not tuned:
        return []
    out = ["", f"Dev tuning on {res['splits']['dev']} (grid points tried; chosen parameters; dev rSum at the "
           "defaults -> tuned -> tuned + fusion; fusion weights):", "",
           "| method | points | chosen | dev defaults | dev tuned | dev tuned + fusion | fusion i2t / t2i |",
           "|---|---:|---|---:|---:|---:|---|"]
    for m, t in sorted(tuned.items()):
        searched = {k: t["params"][k] for k in t["table"][0]["params"]}
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in searched.items())
        out.append(f"| {m} | {len(t['table'])} | {chosen} | {t['dev_default_rsum']:.2f} | {t['dev_rsum']:.2f} | "
                   f"{t['dev_fused_rsum']:.2f} | {t['fusion'].get('i2t', 0):g} / {t['fusion'].get('t2i', 0):g} |")
    return out


def recipe_note(rec: Dict) -> str:
    """One recipe's settings in a sentence (its record, see ``Recipe.record``)."""
    episodes = (f"episodes of {','.join(map(str, rec['episode_images']))} images" if rec["episode_images"]
                else "the whole training split")
    return (f"`{rec['name']}` (reads {rec['reads']}; trains on {episodes}; builder {rec['builder']}, model "
            f"{rec['model']}, training {rec['train']}" + (f"; overrides {rec['overrides']}" if rec["overrides"]
                                                         else "") + ")")


def learned_note(cfg: Dict) -> str:
    """The settings paragraph of the report."""
    paper = any(p in PAPER_PROTOCOLS for p in cfg["protocols"])
    recipes = cfg.get("recipes")
    what = ("Learned re-rankers, one per recipe of `pillargraph.train.recipes`, trained as `pillargraph train "
            "--recipe NAME` trains them: " + "; ".join(recipe_note(r) for r in recipes.values()) + ". "
            if recipes else f"Learned re-ranker settings: {cfg.get('learned')}. ")
    return (what + f"Seeds {cfg.get('seeds', [cfg['seed']])} (learned rows are the mean over "
            f"seeds; per-seed rSum and spread below each table); best epoch and base-fusion weights selected on "
            f"the protocol's dev split (f30k-coco reuses the f30k models, whose epoch was chosen on Flickr30K "
            f"dev, and selects its fusion on COCO dev); CPU, {cfg['torch_threads']} torch threads on a shared "
            f"machine. "
            + ("Training-free re-rankers get three rows on f30k/f30k-coco: published defaults, `(dev-tuned)`: "
               "1-3 main hyperparameters chosen on the protocol's dev split from the grids in "
               "`pillargraph.baselines.TUNING_GRIDS`, and `(dev-tuned + fusion)`: that plus a dev-selected "
               "per-query standardised fusion with the base (weight 0, the base, in the grid); bank methods "
               "are tuned with a bank of 1,000 Flickr30K-train anchors and their captions. " if paper else
               "Training-free re-rankers run with their published defaults. ")
            + "Bank methods use a query bank of the dev split's anchors and captions (same cross-modal encoder) "
            "scored against the test gallery (none for `bm25`, whose scores are no cosines of embeddings). "
            "Encoders: `minilm` = all-MiniLM-L6-v2, `tfidf` = raw TF-IDF, `lsa` = TF-IDF + 256-d truncated SVD, "
            "`bm25` = BM25 (anchor as query, text as document), the last three fitted on the Flickr30K and COCO "
            "dev captions. Combo `CROSS:INTRA`: encoder of the cross-modal score : encoder of the intra-modal "
            "similarities.")


def summary_section(payload: Dict) -> List[str]:
    """The summary table and its honest reading."""
    out: List[str] = []
    out += ["## Summary (rSum)", "",
            "| combo | protocol | recipe | base | learned | learned + fusion | best training-free | "
            "best not transductive (bank included) | training-free above learned + fusion |",
            "|---|---|---|---:|---:|---:|---|---|---|"]
    for res in payload["results"]:
        for s in summary_lines(res):
            best = f"{s['best_tf']} {s['best_tf_rsum']:.2f}" if s["best_tf"] else "-"
            best_ind = (f"{s['best_inductive_tf']} {s['best_inductive_tf_rsum']:.2f}"
                        if s["best_inductive_tf"] else "-")
            above = ", ".join(s["tf_above_fused"]) or "none"
            out.append(f"| {res['combo']} | {res['protocol']} | {s['recipe'] or '-'} | {s['base']:.2f} | "
                       f"{s['learned']:.2f} ({s['learned'] - s['base']:+.2f}) | {s['fused']:.2f} "
                       f"({s['fused'] - s['base']:+.2f}) | {best} | {best_ind} | {above} |")
    out += ["", "Honest reading:", ""]
    out += [reading_line(res, line) for res in payload["results"] for line in summary_lines(res)]
    return out


def reading_line(res: Dict, s: Dict[str, Any]) -> str:
    """One recipe's result in words: against the base, and the training-free rows above it with their flags."""
    notes = []
    if s["learned"] <= s["base"]:
        notes.append(f"the learned scores alone do not beat the base ({s['learned']:.2f} vs {s['base']:.2f})")
    if s["fused"] < s["base"] - 1e-9:
        notes.append(f"learned + fusion falls BELOW the base ({s['fused']:.2f} vs {s['base']:.2f})")
    elif s["fused"] <= s["base"] + 1e-9:
        notes.append("learned + fusion only ties the base (the dev split chose the base ranking)")
    if s["tf_above_fused"]:
        same = s["tf_same_flags_above_fused"]
        notes.append(f"{len(s['tf_above_fused'])} training-free method(s) beat learned + fusion: "
                     f"{', '.join(s['tf_above_fused'])}"
                     + (f" (of these, {', '.join(same)} use nothing the learned model lacks)" if same
                        else " (all of them use a query bank" + ("" if s["learned_transductive"]
                                                                   else " or all test queries at once") + ")"))
    if not notes:
        notes.append("learned + fusion beats the base and every training-free method")
    return f"- {res['combo']}, {res['protocol']}, {s['recipe'] or 'learned'}: " + "; ".join(notes) + "."


def result_section(res: Dict, cfg: Dict) -> List[str]:
    """One (combo, protocol) result: its table, cuts, learned runs, seeds and dev tuning."""
    out: List[str] = []
    t = res["table"]
    out += ["", f"## {res['combo']} - {res['title']}", ""]
    if len(res["cases"]) > 1:
        out.append(f"Metrics averaged over {len(res['cases'])} folds (base rSum per fold: "
                   + ", ".join(f"{x:.2f}" for x in t["base_rsum_per_fold"]) + ").")
    if res.get("peak_rss_gib") is not None:
        out.append(f"This protocol took {res['seconds'] / 60:.1f} min (training of every seed included where it "
                   f"trained the models), peak RSS of the process so far {res['peak_rss_gib']:.2f} GiB.")
    c0 = res["cases"][0]["report"]["config"]
    bank = c0.get("bank") or {}
    out.append(f"Test bundle: {c0['bundle']['num_images']} images x {c0['bundle']['num_texts']} captions"
               f"{' per fold' if len(res['cases']) > 1 else ''}; query bank: "
               + (", ".join(f"{k} {v[0]}x{v[1]}" for k, v in bank.items()) or "none") + ".")
    out += ["", "| method | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rSum | Δ rSum "
            "| time (s) | intra | bank | embeddings | transductive |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|:---:|:---:|"]
    b = t["base"]
    out.append("| base | " + " | ".join(f"{b[k]:.2f}" for k in RECALLS) + f" | {b['rsum']:.2f} |  |  "
               "| - | - | - | - |")
    for r in sorted(_ok_rows(t), key=lambda r: (is_learned(r["method"]), r["method"])):
        m = r["metrics"]
        name = f"**{r['method']}**" if is_learned(r["method"]) else r["method"]
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        out.append(f"| {name} | " + " | ".join(f"{m[k]:.2f}" for k in RECALLS)
                   + f" | {m['rsum']:.2f} | {r['delta']['rsum']:+.2f} | {secs} | "
                   + " | ".join(_fmt_flag(r["needs"].get(f)) for f in FLAGS) + " |")
    others = [r for r in t["rows"] if r["status"] != "ok"]
    not_run = sorted(set(cfg["all_methods"]) - {r["method"] for r in t["rows"]})
    if others or not_run:
        out += ["", "Not run:", ""]
        out += [f"- {r['method']} ({r['status']}): {r.get('reason', '')}" for r in others]
        out += [f"- {m} (cut): not run on this protocol's test bundles to fit the time budget" for m in not_run]
    out += ["", "Learned re-rankers per " + ("fold" if len(res["cases"]) > 1 else "run") + ": "
            + "; ".join(f"{c['test']}, {name}: trained on {info['train_images']} images x "
                        f"{info['train_texts']} captions, best epoch {info['best_epoch'] + 1}/{info['epochs_run']}, "
                        f"dev rSum {info['best_dev_rsum']:.2f}, fusion "
                        f"i2t {info['fusion']['i2t']:g} / t2i {info['fusion']['t2i']:g} "
                        f"({info['fusion'].get('output', 'fused')} output), "
                        f"trained in {info['train_seconds']:.0f}s"
                        for c in res["cases"] for name, info in _learned_infos(c)) + "."]
    out += seed_lines(res) + multi_positive_lines(res) + tuning_lines(res) + stage_lines(res)
    return out


def _learned_infos(case: Dict) -> List[Tuple[str, Dict]]:
    """``(recipe, info)`` of a test case's learned models (older results hold one info without a recipe)."""
    info = case["learned"]
    return [("learned", info)] if "best_epoch" in info else list(info.items())


def stage_lines(res: Dict) -> List[str]:
    """Time and peak memory of every recorded stage (the paper-scale protocols)."""
    if not res.get("stages"):
        return []
    return (["", "Stages (wall time; peak RSS of the process so far):", "", "| stage | time (s) | peak RSS (GiB) |",
             "|---|---:|---:|"] + [f"| {st['stage']} | {st['seconds']:.1f} | {st['peak_rss_gib']:.2f} |"
                                    for st in res["stages"]])


def to_markdown(payload: Dict) -> str:
    cfg = payload["config"]
    out = [f"Command: `{payload['command']}`", "",
           "**These are caption-proxy results on real captions (each image is stood in for by one of its own "
           "captions; all retrieval is text-to-text), NOT image-text retrieval results, and are not "
           "comparable to published image-text numbers.**", "",
           learned_note(cfg), ""]
    runs = cfg.get("runs") or [{"config": cfg}]
    out += ["Time and peak memory (whole run, after the encodings were cached; 2-core machine shared with other "
            "jobs): " + "; ".join(f"{', '.join(r['config']['combos'])}: {r['config'].get('seconds_total', 0) / 60:.1f} "
                                  f"min, peak RSS {r['config'].get('peak_rss_gib', float('nan')):.2f} GiB"
                                  for r in runs) + ".", ""]
    if cfg.get("note_seed_repair"):
        out += [f"Note: {cfg['note_seed_repair']}.", ""]
    if cfg.get("cuts"):
        out += ["What was cut to fit the time budget:", ""] + [f"- {c}" for c in cfg["cuts"]] + [""]
    if not cfg.get("complete", True):
        out += [f"**Partial: {len(payload['results'])} of {len(cfg['combos']) * len(cfg['protocols'])} "
                f"(combo, protocol) results so far.**", ""]
    if cfg.get("limit"):
        out += [f"Every split cut to its first {cfg['limit']} images (smoke run).", ""]
    out += summary_section(payload)
    for res in payload["results"]:
        out += result_section(res, cfg)
    out += ["", "Flags: what a method uses beyond the test `sim_i2t`: intra-modal matrices, a query bank, raw "
            "embeddings, or all test queries at once (transductive). The learned re-ranker also used a labelled "
            "training split. Fusion weight 0 is the base ranking, 1 the learned scores alone. Rows with "
            "different flags use different information.", ""]
    return "\n".join(out)


def plot(payload: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    results = payload["results"]
    n = len(results)
    cols = min(2, n)
    rows_n = math.ceil(n / cols)
    height = max(3.5, 0.32 * max(len(_ok_rows(r["table"])) for r in results) + 1.5)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7.5 * cols, height * rows_n), squeeze=False)
    for ax, res in zip(axes.flat, results):
        rows = sorted(_ok_rows(res["table"]), key=lambda r: r["delta"]["rsum"])
        names = [r["method"].replace(" (learned + dev-selected base fusion)", " (learned + fusion)") for r in rows]
        vals = [r["delta"]["rsum"] for r in rows]
        colors = ["tab:orange" if is_learned(r["method"]) else
                  ("tab:green" if v > 0 else "tab:red") for r, v in zip(rows, vals)]
        ax.barh(range(len(rows)), vals, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names, fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("rSum change vs base")
        ax.set_title(f"{res['combo']}, {res['protocol']} (base rSum {res['table']['base']['rsum']:.1f})",
                     fontsize=10)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:+.1f} ", va="center", ha="left" if v >= 0 else "right", fontsize=7)
        lo, hi = min(vals + [0]), max(vals + [0])
        pad = 0.2 * (hi - lo or 1)
        ax.set_xlim(lo - pad, hi + pad)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Caption proxy (real captions, text-to-text; NOT image-text results)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def merge_runs(paths: List[Path]) -> Dict:
    """One payload from several runs (their results in order; every command and config kept)."""
    runs = [json.loads(p.read_text()) for p in paths]
    first = runs[0]
    config = dict(first["config"], combos=[c for r in runs for c in r["config"]["combos"]],
                  complete=all(r["config"].get("complete", True) for r in runs),
                  seconds_total=sum(r["config"].get("seconds_total", 0) for r in runs),
                  runs=[{"command": r["command"], "config": r["config"]} for r in runs])
    return {"command": " ; ".join(r["command"] for r in runs), "note": first["note"], "config": config,
            "results": [res for r in runs for res in r["results"]]}


def write_outputs(payload: Dict, out: Path) -> None:
    """``OUT.json``, ``OUT.md`` and ``OUT.png``, each atomically."""
    write_results(out, payload, to_markdown(payload))
    plot(payload, out.with_suffix(".png"))

