"""Caption-proxy benchmark, runs: the learned re-rankers trained per protocol (and per seed on the paper-scale
protocols), the training-free methods' dev tuning, and every test bundle scored into a comparison table.

Used by ``benchmarks/caption_proxy.py`` (the entry point; see its ``--help``).
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from pillargraph.baselines import QueryBank, TunedReranker, evaluate_rescored, get_reranker, tune_reranker
from pillargraph.bundle import SimilarityBundle
from pillargraph.compare import ComparisonReport, ComparisonRow, compare
from pillargraph.data import coco5k_eccv_cxc
from pillargraph.metrics import fold_slices
from pillargraph.rerank import FusionChoice, combine_any, direction_scores, rerank_scores, select_fusion_weights
from pillargraph.train import FittedReranker, Recipe, fit_reranker

from benchmarks.caption_proxy_data import (FLAGS, LEARNED_NEEDS, PROTOCOLS, RECALLS, TUNED, TUNED_FUSED, Bundles,
                                           PaperData, cut_train, dev_bank, learned_labels, learned_recipes,
                                           without_embeddings)
from benchmarks.common import claim_model_dir, log, peak_rss_gib


# ------------------------------------------------------------------ learned re-ranker
def train_model(train: SimilarityBundle, dev: SimilarityBundle, recipe: Recipe, args) -> Tuple[FittedReranker, Dict]:
    """The transfer/coco1k protocols' model: one recipe, one seed, trained as ``pillargraph train`` trains it."""
    fitted = fit_reranker(train, dev, recipe=recipe, seed=args.seed, device=args.device)
    r = fitted.result
    info = {"recipe": recipe.name, "train_images": train.num_images, "train_texts": train.num_texts,
            "dev_images": dev.num_images, "epochs": recipe.train.get("epochs"), "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch, "best_dev_rsum": r.best_dev_rsum,
            "fusion": r.fusion, "train_seconds": round(fitted.seconds, 1),
            "dev_history": r.dev_history()}
    return fitted, info


def learned_extra(name: str, fitted: FittedReranker, test: SimilarityBundle,
                  device: Optional[str]) -> Tuple[Dict, Dict, float]:
    t0 = time.perf_counter()
    scores = fitted.rescore(test, device=device)
    needs = dict(LEARNED_NEEDS, transductive=fitted.transductive)
    alone, fused = learned_labels(name)
    return {alone: scores["learned"], fused: scores["fused"]}, {alone: needs, fused: needs}, time.perf_counter() - t0


# ------------------------------------------------------------------ one test bundle
def run_case(test: SimilarityBundle, dev: SimilarityBundle, train: SimilarityBundle,
             methods: Optional[List[str]], args) -> Tuple[ComparisonReport, Dict]:
    extra, needs, secs, infos = {}, {}, {}, {}
    for name, recipe in learned_recipes(args).items():
        fitted, info = train_model(without_embeddings(train), without_embeddings(dev), recipe, args)
        log(f"    trained {name}: best epoch {info['best_epoch']}, dev rSum {info['best_dev_rsum']:.2f}, "
            f"fusion {info['fusion']}, {info['train_seconds']}s")
        e, n, secs[name] = learned_extra(name, fitted, test, args.device)
        extra.update(e)
        needs.update(n)
        infos[name] = info
        del fitted
    bank, why = dev_bank(test, dev)
    for info in infos.values():
        info["bank"] = why or "dev split anchors/captions, cross-modal encoder"
    t0 = time.perf_counter()
    report = compare(test, methods=methods, bank=bank, device=args.device, extra=extra, extra_needs=needs)
    for name in infos:
        for label in learned_labels(name):
            report.row(label).seconds = secs[name]  # graph building + both re-rankings, shared
    log(f"    compared {len(report.rows)} rows in {time.perf_counter() - t0:.1f}s: base rSum "
        f"{report.base['rsum']:.2f}, " + ", ".join(
            f"{n} {report.row(learned_labels(n)[0]).metrics['rsum']:.2f} / "
            f"+fusion {report.row(learned_labels(n)[1]).metrics['rsum']:.2f}" for n in infos))
    return report, infos


def average_reports(reports: List[ComparisonReport]) -> Dict[str, Any]:
    """Per-fold tables averaged: base and each row's metrics (rows that ran in every fold)."""
    def mean(dicts):
        return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}

    base = mean([r.base for r in reports])
    rows = []
    for r0 in reports[0].rows:
        per = [r.row(r0.method) for r in reports]
        row = {"method": r0.method, "needs": r0.needs, "params": r0.params}
        if all(p.status == "ok" for p in per):
            row["status"] = "ok"
            row["metrics"] = mean([p.metrics for p in per])
            row["delta"] = {k: row["metrics"][k] - base[k] for k in RECALLS + ("rsum",)}
            secs = [p.seconds for p in per if p.seconds is not None]
            row["seconds"] = float(np.mean(secs)) if secs else None
            row["rsum_per_fold"] = [p.metrics["rsum"] for p in per]
            row["delta_rsum_per_fold"] = [p.delta["rsum"] for p in per]
        else:
            bad = [p for p in per if p.status != "ok"]
            row["status"] = bad[0].status
            row["reason"] = bad[0].reason
        rows.append(row)
    return {"base": base, "base_rsum_per_fold": [r.base["rsum"] for r in reports], "rows": rows}


# ------------------------------------------------------------------ protocols
def run_protocol(name: str, data: Bundles, args) -> Dict[str, Any]:
    spec = PROTOCOLS[name]
    t0 = time.perf_counter()
    dev = data.get(spec["dev"])
    full = data.get(spec["train"])
    cases = []
    if name == "transfer":
        test = data.get(spec["test"])
        log(f"  [{name}] train {spec['train']} {full.num_images} images, dev {spec['dev']}, "
            f"test {spec['test']}")
        train = cut_train(without_embeddings(full), torch.arange(full.num_images), args.train_images)
        report, info = run_case(test, dev, train, args.methods, args)
        cases.append((spec["test"], report, info))
    else:
        folds = fold_slices(full.num_images, args.folds)
        for f, idx in enumerate(folds[:args.max_folds]):
            rest = np.concatenate([b for g, b in enumerate(folds) if g != f])
            log(f"  [{name}] fold {f + 1}/{len(folds)}: test images {idx[0]}..{idx[-1]}, "
                f"train {len(rest)} images")
            test = full.subset(torch.as_tensor(idx))
            train = cut_train(without_embeddings(full), torch.as_tensor(rest), args.train_images)
            report, info = run_case(test, dev, train, args.fold_methods, args)
            cases.append((f"{spec['test']} fold {f + 1}", report, info))
            del train, test
            gc.collect()
    reports = [c[1] for c in cases]
    table = (average_reports(reports) if len(reports) > 1 else
             {"base": reports[0].base, "rows": [dict(vars(r)) for r in reports[0].rows]})
    return {"protocol": name, "title": spec["title"], "splits": {k: spec[k] for k in ("train", "dev", "test")},
            "methods": args.methods if name == "transfer" else args.fold_methods,
            "table": table,
            "cases": [{"test": t, "learned": info, "report": json.loads(r.to_json())} for t, r, info in cases],
            "seconds": round(time.perf_counter() - t0, 1)}


def fit_models(data: PaperData, dev: SimilarityBundle, args) -> Dict[Tuple[str, int], FittedReranker]:
    """One model per recipe and seed, epoch chosen on ``dev`` (the first protocol's dev split; later ones reuse it),
    each trained by ``fit_reranker(recipe=...)`` on the split as the CLI reads it."""
    for name, recipe in learned_recipes(args).items():
        todo = [seed for seed in args.seeds if (name, seed) not in data.models]
        if not todo:
            continue
        t0 = time.perf_counter()
        train = data.proxy.train_for(recipe)
        data.stage(f"training split for {name} ({data.proxy.label(recipe)})", t0)
        for seed in todo:
            t0 = time.perf_counter()
            out_dir = saved_model_dir(data, name, recipe, seed, dev, args)
            fitted = fit_reranker(train, without_embeddings(dev), recipe=recipe, seed=seed, device=args.device,
                                  episode_seed=data.proxy.episode_seed, out_dir=out_dir)
            data.models[(name, seed)] = fitted
            log(f"    {name} seed {seed}: fusion {fitted.result.fusion}")
            data.stage(f"train {name} seed {seed} (best epoch {fitted.result.best_epoch + 1}/"
                       f"{fitted.result.epochs_run}, dev rSum {fitted.result.best_dev_rsum:.2f})", t0)
    return data.models


def saved_model_dir(data: PaperData, name: str, recipe: Recipe, seed: int, dev: SimilarityBundle,
                    args) -> Optional[Path]:
    """With ``--save-models``: the model's run folder (``best.pt`` with its fusion, ``data.json`` with what it was
    trained on; a finished run there is reused, an unfinished one resumed), else ``None``."""
    if not args.save_models:
        return None
    info = data.proxy.model_info(name, recipe, seed, dev.num_images)
    return claim_model_dir(args.save_models, data.proxy.combo, name, seed, info)


def tune_all(data: PaperData, key: str, dev: SimilarityBundle, methods: List[str], args) -> Dict[str, TunedReranker]:
    """Every training-free method's parameters and fusion chosen on ``dev`` (cached per dev split)."""
    if key not in data.tuned:
        bank = data.tuning_bank(dev)
        data.tuned[key] = {}
        for m in methods:
            t0 = time.perf_counter()
            try:
                data.tuned[key][m] = tune_reranker(m, dev, bank=bank, device=args.device)
            except (ValueError, RuntimeError) as err:
                log(f"    tuning {m} failed: {err}")
                continue
            t = data.tuned[key][m]
            log(f"    tuned {m} on {key}: {t.params} dev rSum {t.dev_default_rsum:.2f} -> {t.dev_rsum:.2f}, "
                f"+fusion {t.fusion} {t.dev_fused_rsum:.2f} ({time.perf_counter() - t0:.1f}s)")
    return data.tuned[key]


def merge_seeds(report: ComparisonReport, names: List[str], seeds: List[int]) -> None:
    """Replace each recipe's per-seed learned rows by their mean (per-seed rSum and spread kept on the row)."""
    for label in [lab for name in names for lab in learned_labels(name)]:
        per = [report.row(f"{label} [seed {s}]") for s in seeds]
        row = per[0]
        rsums = [p.metrics["rsum"] for p in per]  # before row 0's metrics become the mean
        mp = [p.params.get("multi_positive") for p in per]
        row.metrics = {k: float(np.mean([p.metrics[k] for p in per])) for k in list(row.metrics)}
        row.delta = {k: row.metrics[k] - report.base[k] for k in row.delta}
        row.params = {"seeds": seeds, "rsum_per_seed": rsums, "rsum_std": float(np.std(rsums))}
        if all(mp):
            row.params["multi_positive"] = {k: float(np.mean([m[k] for m in mp])) for k in mp[0]}
        row.method = label
        report.rows = [r for r in report.rows if r not in per[1:]]


def paper_case(test: SimilarityBundle, data: PaperData, fusions: Dict[Tuple[str, int], FusionChoice],
               tuned: Dict[str, TunedReranker], bank: Optional[QueryBank], methods: List[str], args,
               multi_positive: bool = False) -> ComparisonReport:
    """One test bundle: base, defaults, tuned, tuned + fusion, and the learned rows (mean over seeds).

    Rows are scored one at a time (a 5K test's two score matrices take 800 MB per row); with
    ``multi_positive`` (the COCO 5K caption proxy, anchor 0) each row also gets ECCV Caption and
    CxC metrics in ``row.params['multi_positive']``.
    """
    empty = compare(test, methods=[])  # the base metrics and the report's config, once
    rows = []
    for label, make, flags in case_rows(test, data, fusions, tuned, bank, methods, args):
        t0 = time.perf_counter()
        try:
            scores = make()
        except ValueError as err:  # recorded like compare() records a method that cannot run
            log(f"    {label}: {err}")
            rows.append(ComparisonRow(method=label, status="failed", needs=flags,
                                      reason=f"{type(err).__name__}: {err}"))
            continue
        secs = time.perf_counter() - t0
        row = ComparisonRow(method=label, status="ok", needs=flags, metrics=evaluate_rescored(scores, test))
        row.delta = {k: row.metrics[k] - empty.base[k] for k in RECALLS + ("rsum",)}
        row.seconds = secs
        if multi_positive:
            row.params["multi_positive"] = coco5k_eccv_cxc(scores, anchor=0)
        rows.append(row)
        del scores
    report = ComparisonReport(base=empty.base, rows=rows, config=empty.config)
    report.config["bank"] = None if bank is None else {k: list(getattr(bank, k).shape) for k in ("bank_i2t", "bank_t2i")
                                                       if getattr(bank, k) is not None}
    if multi_positive:
        report.config["base_multi_positive"] = coco5k_eccv_cxc(test, anchor=0)
    merge_seeds(report, args.recipes, args.seeds)
    log(f"    base rSum {report.base['rsum']:.2f}, " + ", ".join(
        f"{n} {report.row(learned_labels(n)[0]).metrics['rsum']:.2f} / +fusion "
        f"{report.row(learned_labels(n)[1]).metrics['rsum']:.2f}" for n in args.recipes)
        + f", peak RSS {peak_rss_gib():.1f} GiB")
    return report


def case_rows(test: SimilarityBundle, data: PaperData, fusions: Dict[Tuple[str, int], FusionChoice],
              tuned: Dict[str, TunedReranker], bank: Optional[QueryBank], methods: List[str], args):
    """``(label, make_scores, flags)`` of every row of a test case, each computed only when asked for."""
    for m in methods:
        cls = type(get_reranker(m))
        flags = {k: v for k, v in cls.needs().items() if k in FLAGS}
        yield m, (lambda cls=cls: cls()(test, bank=bank, device=args.device)), flags
        if m in tuned:
            t, kept = tuned[m], {}

            def tuned_scores(t=t, kept=kept):
                kept["s"] = t(test, bank=bank, device=args.device)
                return kept["s"]
            yield TUNED.format(m), tuned_scores, flags
            # the fused row blends the scores just made (the method runs once for both rows)
            yield TUNED_FUSED.format(m), (lambda t=t, kept=kept, again=tuned_scores: t.fuse(
                test.to(args.device), kept.pop("s") if "s" in kept else again())), flags
    for (name, seed), fitted in data.models.items():
        flags = dict(LEARNED_NEEDS, transductive=fitted.transductive)
        f = fusions[(name, seed)]
        cache = {}
        alone, fused = learned_labels(name)

        def scored(fitted=fitted, cache=cache):
            if "s" not in cache:
                cache["s"] = rerank_scores(fitted.model, test, fitted.builder, device=args.device)
            return cache["s"]
        yield (f"{alone} [seed {seed}]",
               lambda scored=scored, f=f: direction_scores(combine_any(test, scored(), 1.0, 1.0, f.output)), flags)
        yield (f"{fused} [seed {seed}]",
               lambda scored=scored, f=f: direction_scores(combine_any(test, scored(), f.i2t, f.t2i, f.output)), flags)
        cache.clear()  # after both rows were made: the learned scores are freed


def learned_info(data: PaperData, fusions: Dict[Tuple[str, int], FusionChoice], args) -> Dict[str, Any]:
    """Per recipe: its training data, settings and, per seed, the epoch, dev rSum, fusion and training time."""
    out = {}
    for name, recipe in learned_recipes(args).items():
        seeds = sorted(s for n, s in data.models if n == name)
        f0 = data.models[(name, seeds[0])]
        out[name] = {"train_images": data.emb.num_images, "train_texts": data.emb.num_texts,
                     "train_form": data.proxy.label(recipe), "settings": f0.settings(),
                     "transductive": f0.transductive,
                     "seeds": {s: {"best_epoch": data.models[(name, s)].result.best_epoch,
                                   "epochs_run": data.models[(name, s)].result.epochs_run,
                                   "best_dev_rsum": data.models[(name, s)].result.best_dev_rsum,
                                   "fusion": fusions[(name, s)].as_dict(),
                                   "train_seconds": round(data.models[(name, s)].seconds, 1),
                                   "dev_history": data.models[(name, s)].result.dev_history()} for s in seeds},
                     # the single-run keys the report reads
                     "best_epoch": f0.result.best_epoch, "epochs_run": f0.result.epochs_run,
                     "best_dev_rsum": f0.result.best_dev_rsum, "fusion": fusions[(name, seeds[0])].as_dict(),
                     "train_seconds": round(f0.seconds, 1)}
    return out


def paper_selection(dev_split: str, dev: SimilarityBundle, paper: PaperData,
                    args) -> Tuple[Dict[Tuple[str, int], FusionChoice], Dict[str, TunedReranker]]:
    """What a paper-scale protocol selects on its dev split: the models (trained on the first protocol's dev
    split), each model's base fusion (re-selected when this dev split differs) and the training-free tunings."""
    models = fit_models(paper, dev, args)
    paper.selected_on = paper.selected_on or dev_split
    t0_fusion = time.perf_counter()
    fusions = {k: (FusionChoice(**m.result.fusion) if dev_split == paper.selected_on else
                   select_fusion_weights(m.model, without_embeddings(dev), m.builder, device=args.device,
                                         output=m.config.fusion_outputs))
               for k, m in models.items()}
    if dev_split != paper.selected_on:
        paper.stage(f"fusion of every model selected on {dev_split}", t0_fusion)
    t0_tune = time.perf_counter()
    tuned = tune_all(paper, dev_split, dev, args.methods, args)
    paper.stage(f"dev tuning of the training-free methods on {dev_split}", t0_tune)
    return fusions, tuned


def run_paper_protocol(name: str, data: Bundles, paper: PaperData, args) -> List[Dict[str, Any]]:
    """``f30k`` (test Flickr30K test) or ``f30k-coco`` (test COCO 1K folds and COCO 5K): result entries."""
    spec = PROTOCOLS[name]
    t0 = time.perf_counter()
    dev = data.get(spec["dev"])
    fusions, tuned = paper_selection(spec["dev"], dev, paper, args)
    tests = ([("f30k", spec["test"], [None])] if name == "f30k" else
             [("coco1k", spec["test"], fold_slices(data.get(spec["test"]).num_images, args.folds)[:args.max_folds]),
              ("coco5k", spec["test"], [None])])
    results = []
    for label, split, folds in tests:
        if label == "coco5k" and args.skip_5k:
            continue
        full = data.get(split)
        cases = []
        for f, idx in enumerate(folds):
            test = full if idx is None else full.subset(torch.as_tensor(idx))
            log(f"  [{name}/{label}] test {split}{'' if idx is None else f' fold {f + 1}'}: "
                f"{test.num_images} x {test.num_texts}")
            bank, why = dev_bank(test, dev)
            methods = args.methods if label != "coco5k" else args.methods_5k
            t0_case = time.perf_counter()
            try:
                report = paper_case(test, paper, fusions, tuned, bank, methods, args,
                                    multi_positive=label == "coco5k" and not args.limit)
            except (RuntimeError, ValueError, ModuleNotFoundError) as err:  # keep what the other tests gave
                log(f"    {label} failed: {type(err).__name__}: {err}")
                break
            paper.stage(f"test {split}{'' if idx is None else f' fold {f + 1}'}: every row", t0_case)
            cases.append((f"{split}" + ("" if idx is None else f" fold {f + 1}"), report,
                          learned_info(paper, fusions, args)))
        reports = [c[1] for c in cases]
        if not reports:
            continue
        table = (average_reports(reports) if len(reports) > 1 else
                 {"base": reports[0].base, "rows": [dict(vars(r)) for r in reports[0].rows]})
        results.append({"protocol": f"{name} ({label})", "title": spec["title"] + f" [{label}]",
                        "splits": {k: spec[k] for k in ("train", "dev", "test")}, "methods": args.methods,
                        "table": table, "tuned": {m: t.as_dict() for m, t in tuned.items()},
                        "cases": [{"test": t, "learned": info, "report": json.loads(r.to_json())}
                                  for t, r, info in cases],
                        "seconds": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(peak_rss_gib(), 2),
                        "stages": list(paper.stages)})
    return results

