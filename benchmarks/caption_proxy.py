"""Caption-proxy benchmark: the learned and every training-free re-ranker on real captions.

No image pixels are available offline, so each image is stood in for by one of
its own captions (see ``pillargraph.data.captions`` and
``shared/data/captions/README.md``). A *combo* ``CROSS:INTRA`` names the text
encoder of the cross-modal score and that of the intra-modal similarities
(``minilm``, ``tfidf``, ``lsa``, or, as CROSS only, ``bm25``; see
``pillargraph.data.text_encoders``): ``minilm:minilm`` is a same-encoder problem,
``tfidf:minilm`` or ``bm25:minilm`` one where the unimodal retrievers know more
than the cross-modal scorer, as in many real image-text systems. A ``bm25``
combo has no cross-modal embeddings to build a query bank from (its scores are
query-document products, not cosines), so bank methods report why they did not run.

Protocols:

* ``transfer``: train on the COCO 5K proxy (``coco_testall``), select the model
  and its base-fusion weights on Flickr30K dev, report on Flickr30K test.
* ``coco1k``: 5-fold cross-validation over the COCO 5K proxy; for fold ``f``
  (1000 consecutive images and their captions) train on the other four folds,
  select on COCO dev, test on fold ``f``; every metric is averaged over folds.

* ``f30k``: the paper's own setting: train on the Flickr30K-train proxy (29,000
  images), select on Flickr30K dev, test on Flickr30K test.
* ``f30k-coco``: the f30k models, fusion selected on COCO dev, tested on COCO 1K
  (5 folds, averaged) and COCO 5K (with ECCV Caption and CxC metrics).

Every test bundle gets the base scores, every training-free re-ranker (bank
methods use a query bank from the protocol's dev split, scored with the same
cross-modal encoder) and each learned recipe (``--recipes``, from
``pillargraph.train.recipes``, trained as ``pillargraph train --recipe`` trains
it) alone and with the dev-selected base fusion. Writes ``OUT.md`` (command
first), ``OUT.json`` (config, every number, time and peak memory per stage) and
``OUT.png`` (rSum change against the base per method, one panel per combo and
protocol), each atomically.

    python benchmarks/caption_proxy.py [--combos minilm:minilm,tfidf:minilm] [--protocols transfer,coco1k]
        [--recipes paper,inductive,transductive] [--epochs N] [--seeds 0,1,2] [--folds 5] [--methods a,b]
        [--fold-methods a,b] [--limit N] [--out benchmarks/results/caption_proxy]

Time: the f30k protocols on all 29,000 training images take hours per combo on 2
cores (each recipe and seed trains on the whole split); ``--train-images`` cuts that.

These numbers are text-to-text retrieval results, NOT image-text results.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import the encoders

import argparse
import gc
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pillargraph.baselines import (QueryBank, TunedReranker, available_rerankers, evaluate_rescored, get_reranker,
                                   tune_reranker)
from pillargraph.bundle import SimilarityBundle
from pillargraph.compare import ComparisonReport, ComparisonRow, compare
from pillargraph.data import (ProxyEmbeddings, caption_proxy_bundle, caption_proxy_embeddings, coco5k_eccv_cxc,
                              resolve_text_encoder)
from pillargraph.metrics import fold_slices
from pillargraph.modality import DIRECTIONS
from pillargraph.rerank import FusionChoice, combine_any, direction_scores, rerank_scores, select_fusion_weights
from pillargraph.train import FittedReranker, Recipe, fit_reranker

from benchmarks.common import (ENCODERS, VARIANTS, ProxyTrain, claim_model_dir, command_line, log, parse_combo,
                               peak_rss_gib, recipe_for, variant)

PROTOCOLS = {
    "transfer": {"train": "coco_testall", "dev": "f30k_dev", "test": "f30k_test",
                 "title": "transfer: train COCO 5K proxy, select on Flickr30K dev, test Flickr30K test"},
    "coco1k": {"train": "coco_testall", "dev": "coco_dev", "test": "coco_testall",
               "title": "COCO 1K: 5-fold CV over the COCO 5K proxy (train 4 folds, select COCO dev, "
                        "test the 5th), averaged"},
    # the paper's own setting: Flickr30K train (29,000 images, through episodes or neighbour lists)
    "f30k": {"train": "f30k_train", "dev": "f30k_dev", "test": "f30k_test",
             "title": "f30k: train Flickr30K-train proxy (29,000 images), select on Flickr30K dev, "
                      "test Flickr30K test"},
    "f30k-coco": {"train": "f30k_train", "dev": "coco_dev", "test": "coco_testall",
                  "title": "f30k-coco: train Flickr30K-train proxy, select on COCO dev, test COCO 1K "
                           "(5 folds, averaged) and COCO 5K"},
}
#: protocols that train on the Flickr30K-train proxy (one model per combo and seed, shared between them)
PAPER_PROTOCOLS = ("f30k", "f30k-coco")
TUNED, TUNED_FUSED = "{} (dev-tuned)", "{} (dev-tuned + fusion)"
# the learned re-ranker reads the intra matrices and was trained on a labelled split; no bank
LEARNED_NEEDS = {"intra": True, "bank": False, "embeddings": False, "transductive": False}
RECALLS = tuple(f"{d}_r{k}" for d in DIRECTIONS for k in (1, 5, 10))
FLAGS = ("intra", "bank", "embeddings", "transductive")


# ------------------------------------------------------------------ small helpers
def learned_labels(name: str) -> Tuple[str, str]:
    """Row names of a recipe's learned scores alone and with the dev-selected base fusion."""
    return f"pillargraph {name} (learned)", f"pillargraph {name} (learned + dev-selected base fusion)"


def is_learned(method: str) -> bool:
    """Whether a row is a learned re-ranker's (any recipe; ``pillargraph (learned)`` in older results)."""
    return method.startswith("pillargraph ")


def learned_pairs(rows: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(recipe, learned row, fused row)`` of every recipe in ``{method: row}`` (older results: recipe '')."""
    out = []
    for method, row in rows.items():
        if is_learned(method) and method.endswith(" (learned)"):
            name = method[len("pillargraph "):-len(" (learned)")] if method != "pillargraph (learned)" else ""
            fused = method[:-len("(learned)")] + "(learned + dev-selected base fusion)"
            if fused in rows:
                out.append((name, row, rows[fused]))
    return out


def learned_recipes(args) -> Dict[str, Recipe]:
    """The recipes of ``--recipes`` by name, with ``--epochs`` when given."""
    return {name: recipe_for(name, args.epochs) for name in args.recipes}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_combos(text: str) -> List[Tuple[str, str]]:
    combos = [parse_combo(item, "--combos") for item in text.split(",")]
    if len(set(combos)) != len(combos):
        raise ValueError(f"--combos: repeated combination in {text!r}")
    return combos


def parse_names(text: Optional[str], what: str) -> Optional[List[str]]:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        get_reranker(n)  # ValueError on a typo, before minutes of encoding
    if not names:
        raise ValueError(f"--{what}: empty list")
    return names


# ------------------------------------------------------------------ data
class Bundles:
    """Caption-proxy bundles of one combo, loaded once (optionally cut to the first ``limit`` images)."""

    def __init__(self, cross: str, intra: str, limit: Optional[int], device: str) -> None:
        self.cross, self.intra, self.limit, self.device = cross, intra, limit, device
        self._cache: Dict[str, SimilarityBundle] = {}

    @property
    def has_embeddings(self) -> bool:
        """Whether the bundles keep cross-modal embeddings (a cosine cross encoder; not BM25's query and document
        rows, which a query bank would wrongly compare by cosine)."""
        return resolve_text_encoder(self.cross).similarity == "cosine"

    def get(self, split: str) -> SimilarityBundle:
        if split not in self._cache:
            t0 = time.perf_counter()
            b = caption_proxy_bundle(split, cross=self.cross, intra=self.intra,
                                     keep_embeddings=self.has_embeddings, device=self.device)
            if self.limit is not None and b.num_images > self.limit:
                b = b.subset(torch.arange(self.limit))
            self._cache[split] = b
            log(f"  bundle {split} ({self.cross}:{self.intra}): {b.num_images} x {b.num_texts}, "
                f"{time.perf_counter() - t0:.1f}s")
        return self._cache[split]


def without_embeddings(b: SimilarityBundle) -> SimilarityBundle:
    """Training needs no raw embeddings: drop them (dense TF-IDF rows are large)."""
    return b.replace(img_emb=None, txt_emb=None)


def cut_train(full: SimilarityBundle, images: torch.Tensor, limit: Optional[int]) -> SimilarityBundle:
    """The training images (the first ``limit`` of them when a time budget asks for it)."""
    if limit is not None:
        images = images[:limit]
    return full.subset(images) if images.numel() < full.num_images else full


def dev_bank(test: SimilarityBundle, dev: SimilarityBundle) -> Tuple[Optional[QueryBank], str]:
    """A query bank of the dev split's anchors and captions scored against ``test`` (or why there is none)."""
    if dev.img_emb is None or dev.txt_emb is None or test.img_emb is None or test.txt_emb is None:
        return None, "the bundles carry no cross-modal embeddings"
    if dev.img_emb.shape[1] != test.txt_emb.shape[1]:
        return None, "dev and test embeddings have different dimensions"
    return QueryBank.from_embeddings(test, bank_img_emb=dev.img_emb, bank_txt_emb=dev.txt_emb), ""


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


# ------------------------------------------------------------------ paper-scale protocols (f30k, f30k-coco)
class PaperData:
    """The Flickr30K-train proxy of one combo (in the form the CLI reads for each recipe), its models (one per
    recipe and seed) and dev tunings, shared by protocols; ``stages`` records time and peak memory of each step."""

    def __init__(self, cross: str, intra: str, args) -> None:
        t0 = time.perf_counter()
        self.proxy = ProxyTrain(f"{cross}:{intra}", args.train_images or 29000, args.train_form, args.lists_k)
        self.emb: ProxyEmbeddings = self.proxy.emb
        self.models: Dict[Tuple[str, int], FittedReranker] = {}
        self.tuned: Dict[str, Dict[str, TunedReranker]] = {}
        self.selected_on: Optional[str] = None  # the dev split that chose the models' epochs and fusion
        self.stages: List[Dict[str, Any]] = []
        self.stage(f"load the f30k_train proxy ({cross}:{intra})", t0)

    def stage(self, what: str, t0: float) -> None:
        """Record a finished step: its wall time since ``t0`` and the process's peak memory so far."""
        self.stages.append({"stage": what, "seconds": round(time.perf_counter() - t0, 1),
                            "peak_rss_gib": round(peak_rss_gib(), 2)})
        log(f"  stage: {what}: {self.stages[-1]['seconds']}s, peak RSS {self.stages[-1]['peak_rss_gib']} GiB")

    def tuning_bank(self, dev: SimilarityBundle, images: int = 1000) -> Optional[QueryBank]:
        """Bank methods are tuned on dev with a bank of training anchors and captions (never dev itself); none
        for a query-document cross scorer (BM25), whose rows are no embeddings to take cosines of."""
        if self.emb.similarity != "cosine":
            return None
        sub = self.emb.subset(torch.arange(min(images, self.emb.num_images))).bundle(keep_embeddings=True)
        return QueryBank.from_embeddings(dev, bank_img_emb=sub.img_emb, bank_txt_emb=sub.txt_emb)


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


def run_paper_protocol(name: str, data: Bundles, paper: PaperData, args) -> List[Dict[str, Any]]:
    """``f30k`` (test Flickr30K test) or ``f30k-coco`` (test COCO 1K folds and COCO 5K): result entries."""
    spec = PROTOCOLS[name]
    t0 = time.perf_counter()
    dev = data.get(spec["dev"])
    models = fit_models(paper, dev, args)
    paper.selected_on = paper.selected_on or spec["dev"]
    t0_fusion = time.perf_counter()
    fusions = {k: (FusionChoice(**m.result.fusion) if spec["dev"] == paper.selected_on else
                   select_fusion_weights(m.model, without_embeddings(dev), m.builder, device=args.device,
                                         output=m.config.fusion_outputs))
               for k, m in models.items()}
    if spec["dev"] != paper.selected_on:
        paper.stage(f"fusion of every model selected on {spec['dev']}", t0_fusion)
    t0_tune = time.perf_counter()
    tuned = tune_all(paper, spec["dev"], dev, args.methods, args)
    paper.stage(f"dev tuning of the training-free methods on {spec['dev']}", t0_tune)
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
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------ main
def check_args(args) -> Tuple[List[Tuple[str, str]], List[str], List[str]]:
    """Validate the arguments (ValueError naming the flag); returns ``(combos, protocols, cuts)``."""
    combos = parse_combos(args.combos)
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    for x in protocols:
        if x not in PROTOCOLS:
            raise ValueError(f"--protocols: unknown protocol {x!r}; expected {list(PROTOCOLS)}")
    if (args.epochs is not None and args.epochs < 1) or args.folds < 2:
        raise ValueError("--epochs must be >= 1 and --folds >= 2")
    args.recipes = [x.strip() for x in args.recipes.split(",") if x.strip()]
    if not args.recipes or len(set(args.recipes)) != len(args.recipes):
        raise ValueError("--recipes: expected distinct names")
    for name in args.recipes:
        if name not in VARIANTS:
            raise ValueError(f"--recipes: unknown recipe {name!r}; expected some of {sorted(VARIANTS)}")
    if args.save_models and not any(x in PAPER_PROTOCOLS for x in protocols):
        raise ValueError(f"--save-models: only the {' and '.join(PAPER_PROTOCOLS)} protocols train on the "
                         f"Flickr30K-train proxy; add one to --protocols")
    if args.limit is not None and args.limit < 2 * args.folds:
        raise ValueError(f"--limit: need at least {2 * args.folds} images")
    args.seeds = [args.seed] if args.seeds is None else [int(x) for x in args.seeds.split(",") if x.strip()]
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ValueError("--seeds: expected distinct integers")
    all_methods = list(available_rerankers())
    args.methods = parse_names(args.methods, "methods") or all_methods
    args.methods_5k = [get_reranker(m).name for m in parse_names(args.methods_5k, "methods-5k")
                       or args.methods]
    args.fold_methods = parse_names(args.fold_methods, "fold-methods") or args.methods
    args.methods = [get_reranker(m).name for m in args.methods]
    args.fold_methods = [get_reranker(m).name for m in args.fold_methods]
    cuts = []
    for name, recipe in learned_recipes(args).items():
        if args.epochs is not None and args.epochs < variant(name).train.get("epochs", args.epochs):
            cuts.append(f"{name} trained for {args.epochs} epoch(s) instead of its recipe's "
                        f"{variant(name).train['epochs']}")
    if args.train_images is not None:
        if args.train_images < 2:
            raise ValueError("--train-images: need at least 2")
        cuts.append(f"each learned re-ranker trained on only the first {args.train_images} images (and their "
                    f"captions) of its training pool in file order, not the whole pool"
                    + ("; on the COCO folds that is the lowest-numbered other fold, so several folds share one "
                       "training set (fold 1 trains on fold 2, every later fold on fold 1; no model sees its own "
                       "test fold)" if "coco1k" in protocols else ""))
    if args.max_folds is not None:
        if not 1 <= args.max_folds <= args.folds:
            raise ValueError(f"--max-folds: expected 1..{args.folds}")
        if args.max_folds < args.folds and "coco1k" in protocols:
            cuts.append(f"COCO 1K: only the first {args.max_folds} of {args.folds} folds were run and averaged")
    if "f30k-coco" in protocols and not args.skip_5k:
        cut5k = [m for m in args.methods if m not in args.methods_5k]
        if cut5k:
            cuts.append(f"COCO 5K (f30k-coco): {', '.join(cut5k)} not run (time budget); "
                        f"{', '.join(args.methods_5k)} ran")
    if "f30k-coco" in protocols and args.skip_5k:
        cuts.append("COCO 5K (f30k-coco) skipped")
    missing = [m for m in all_methods if m not in args.methods]
    if missing:
        cuts.append(f"training-free methods not run anywhere: {', '.join(missing)}")
    fold_missing = [m for m in args.methods if m not in args.fold_methods]
    if fold_missing and "coco1k" in protocols:
        cuts.append(f"on the COCO 1K folds only {', '.join(args.fold_methods)} ran; "
                    f"{', '.join(fold_missing)} ran on Flickr30K test only")
    return combos, protocols, cuts


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--combos", default="minilm:minilm,tfidf:minilm",
                   help=f"comma-separated CROSS:INTRA encoder pairs ({'|'.join(ENCODERS)}; bm25 as CROSS only)")
    p.add_argument("--protocols", default="transfer,coco1k",
                   help=f"comma-separated: {', '.join(PROTOCOLS)}")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="folds of the coco1k protocol")
    p.add_argument("--methods", default=None, help="comma-separated training-free methods (default: all)")
    p.add_argument("--fold-methods", default=None,
                   help="methods on the coco1k folds (default: --methods); a cut here is reported")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on only the first N images of each training pool (a time-budget cut, reported)")
    p.add_argument("--max-folds", type=int, default=None,
                   help="run only the first K folds of coco1k (a time-budget cut, reported)")
    p.add_argument("--limit", type=int, default=None, help="cut every split to its first N images (smoke runs)")
    p.add_argument("--recipes", default="inductive",
                   help="comma-separated learned recipes (pillargraph.train.recipes, or a dev-search variant of "
                        "benchmarks/common.py), each trained and reported")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds of the learned re-ranker on f30k/f30k-coco (default: --seed)")
    p.add_argument("--train-form", default="auto", choices=("auto", "dense", "lists"),
                   help="f30k/f30k-coco: the Flickr30K-train proxy as one dense bundle or as top-k neighbour lists "
                        "searched within each recipe's episodes, as the CLI reads them (auto: dense up to 5,000 "
                        "images)")
    p.add_argument("--lists-k", type=int, default=100, help="list depth of the lists form")
    p.add_argument("--methods-5k", default=None,
                   help="training-free methods on COCO 5K (f30k-coco; default: every one of --methods); the others "
                        "are cut there, reported")
    p.add_argument("--skip-5k", action="store_true", help="f30k-coco: skip the COCO 5K test (reported)")
    p.add_argument("--save-models", default=None, metavar="DIR",
                   help="f30k/f30k-coco: keep each trained model in DIR/CROSS-INTRA/RECIPE/seedS (best.pt with its "
                        "dev-selected fusion, data.json); a finished run there is reused, so benchmarks/transfer.py "
                        "--models DIR re-ranks with the same models")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--out", default="benchmarks/results/caption_proxy", help="output path without extension")
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="only merge earlier runs' JSON files (e.g. one per combo, run in parallel) into --out")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.merge:
        write_outputs(merge_runs([Path(x) for x in args.merge]), Path(args.out))
        return 0
    try:
        combos, protocols, cuts = check_args(args)
    except ValueError as err:
        p.error(str(err))
    all_methods = list(available_rerankers())
    command = command_line("benchmarks/caption_proxy.py", argv)
    device = args.device or "cpu"
    t_start = time.perf_counter()
    config = {"combos": [f"{c}:{i}" for c, i in combos], "protocols": protocols, "epochs": args.epochs,
              "seed": args.seed, "folds": args.folds, "max_folds": args.max_folds,
              "train_images": args.train_images, "methods": args.methods,
              "fold_methods": args.fold_methods, "all_methods": all_methods, "limit": args.limit,
              "device": device, "torch_threads": torch.get_num_threads(), "cuts": cuts,
              "anchor": 0, "tfidf_fit": ["f30k_dev", "coco_dev"],
              "recipes": {name: r.record() for name, r in learned_recipes(args).items()},
              "seeds": args.seeds, "train_form": args.train_form, "lists_k": args.lists_k,
              "methods_5k": args.methods_5k, "skip_5k": args.skip_5k, "save_models": args.save_models,
              "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    payload = {"command": command, "note": "caption-proxy results on real captions, NOT image-text results",
               "config": config, "results": []}
    out = Path(args.out)
    todo, done = len(combos) * len(protocols), 0
    for cross, intra in combos:
        data = Bundles(cross, intra, args.limit, device)
        paper = None
        for proto in protocols:
            log(f"combo {cross}:{intra}, protocol {proto}")
            if proto in PAPER_PROTOCOLS:
                paper = paper or PaperData(cross, intra, args)
                results = run_paper_protocol(proto, data, paper, args)
            else:
                results = [run_protocol(proto, data, args)]
            for res in results:
                res["combo"] = f"{cross}:{intra}"
            payload["results"].extend(results)
            done += 1
            config["seconds_total"] = round(time.perf_counter() - t_start, 1)
            config["peak_rss_gib"] = round(peak_rss_gib(), 2)
            config["complete"] = done == todo
            # written after every (combo, protocol), so an interrupted run keeps what it finished
            write_outputs(payload, out)
            log(f"  done in {results[-1]['seconds']}s; wrote {out}.md, .json, .png ({done}/{todo})")
        del data, paper
        gc.collect()
    print(to_markdown(payload))
    log(f"total {config['seconds_total']}s")
    return 0


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
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(payload, indent=1, default=str) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), to_markdown(payload).encode())
    plot(payload, out.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
