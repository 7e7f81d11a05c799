"""Caption-proxy benchmark: the learned and every training-free re-ranker on real captions.

No image pixels are available offline, so each image is stood in for by one of
its own captions (see ``pillargraph.data.captions`` and
``shared/data/captions/README.md``). A *combo* ``CROSS:INTRA`` names the text
encoder of the cross-modal score and that of the intra-modal similarities
(``minilm`` or ``tfidf``): ``minilm:minilm`` is a same-encoder problem,
``tfidf:minilm`` one where the unimodal retrievers know more than the
cross-modal scorer, as in many real image-text systems.

Protocols:

* ``transfer``: train on the COCO 5K proxy (``coco_testall``), select the model
  and its base-fusion weights on Flickr30K dev, report on Flickr30K test.
* ``coco1k``: 5-fold cross-validation over the COCO 5K proxy; for fold ``f``
  (1000 consecutive images and their captions) train on the other four folds,
  select on COCO dev, test on fold ``f``; every metric is averaged over folds.

Every test bundle gets the base scores, every training-free re-ranker (bank
methods use a query bank from the protocol's dev split, scored with the same
cross-modal encoder) and the learned re-ranker alone and with the dev-selected
base fusion. Writes ``OUT.md`` (command first), ``OUT.json`` (config and every
number) and ``OUT.png`` (rSum change against the base per method, one panel per
combo and protocol), each atomically.

    python benchmarks/caption_proxy.py [--combos minilm:minilm,tfidf:minilm] [--protocols transfer,coco1k]
        [--epochs 3] [--seed 0] [--folds 5] [--methods a,b] [--fold-methods a,b] [--limit N]
        [--out benchmarks/results/caption_proxy]

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
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pillargraph.baselines import QueryBank, available_rerankers, get_reranker
from pillargraph.bundle import SimilarityBundle
from pillargraph.compare import ComparisonReport, compare
from pillargraph.data import caption_proxy_bundle
from pillargraph.graphs import PillarGraphBuilder
from pillargraph.metrics import fold_slices
from pillargraph.modality import DIRECTIONS
from pillargraph.nn import PillarReranker
from pillargraph.rerank import rerank
from pillargraph.train import TrainConfig, Trainer

ENCODERS = ("minilm", "tfidf")
DEFAULT_EPOCHS = 3
PROTOCOLS = {
    "transfer": {"train": "coco_testall", "dev": "f30k_dev", "test": "f30k_test",
                 "title": "transfer: train COCO 5K proxy, select on Flickr30K dev, test Flickr30K test"},
    "coco1k": {"train": "coco_testall", "dev": "coco_dev", "test": "coco_testall",
               "title": "COCO 1K: 5-fold CV over the COCO 5K proxy (train 4 folds, select COCO dev, "
                        "test the 5th), averaged"},
}
LEARNED = "pillargraph (learned)"
LEARNED_FUSED = "pillargraph (learned + dev-selected base fusion)"
# the learned re-ranker reads the intra matrices and was trained on a labelled split; no bank, one query at a time
LEARNED_NEEDS = {"intra": True, "bank": False, "embeddings": False, "transductive": False}
RECALLS = tuple(f"{d}_r{k}" for d in DIRECTIONS for k in (1, 5, 10))
FLAGS = ("intra", "bank", "embeddings", "transductive")


# ------------------------------------------------------------------ small helpers
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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_combos(text: str) -> List[Tuple[str, str]]:
    combos = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p in ENCODERS for p in parts):
            raise ValueError(f"--combos: expected CROSS:INTRA pairs of {list(ENCODERS)}, got {item!r}")
        combos.append((parts[0], parts[1]))
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

    def get(self, split: str) -> SimilarityBundle:
        if split not in self._cache:
            t0 = time.perf_counter()
            b = caption_proxy_bundle(split, cross=self.cross, intra=self.intra, keep_embeddings=True,
                                     device=self.device)
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
def train_model(train: SimilarityBundle, dev: SimilarityBundle, args) -> Tuple[PillarReranker, PillarGraphBuilder, Dict]:
    builder = PillarGraphBuilder(num_pillars=32)
    torch.manual_seed(args.seed)
    model = PillarReranker(builder.num_features, hidden_channels=128)
    t0 = time.perf_counter()
    result = Trainer(model, builder, TrainConfig(epochs=args.epochs, seed=args.seed),
                     device=args.device, progress=False).fit(train, dev)
    info = {"train_images": train.num_images, "train_texts": train.num_texts,
            "dev_images": dev.num_images, "epochs": args.epochs, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "best_dev_rsum": result.best_dev_rsum,
            "fusion": result.fusion, "train_seconds": round(time.perf_counter() - t0, 1),
            "dev_history": [{"epoch": h["epoch"], "dev_rsum": h.get("dev", {}).get("rsum"),
                             "train_time_s": round(h["train_time_s"], 1)} for h in result.history]}
    return model, builder, info


def learned_extra(model: PillarReranker, builder: PillarGraphBuilder, test: SimilarityBundle,
                  device: Optional[str]) -> Tuple[Dict, Dict, float]:
    t0 = time.perf_counter()
    graphs = {d: builder.build(test, d) for d in DIRECTIONS}
    alone = rerank(model, test, builder, fusion=1.0, graphs=graphs, device=device).sim_i2t
    fused = rerank(model, test, builder, graphs=graphs, device=device).sim_i2t
    extra = {LEARNED: {"i2t": alone, "t2i": alone}, LEARNED_FUSED: {"i2t": fused, "t2i": fused}}
    return extra, {LEARNED: LEARNED_NEEDS, LEARNED_FUSED: LEARNED_NEEDS}, time.perf_counter() - t0


# ------------------------------------------------------------------ one test bundle
def run_case(test: SimilarityBundle, dev: SimilarityBundle, train: SimilarityBundle,
             methods: Optional[List[str]], args) -> Tuple[ComparisonReport, Dict]:
    model, builder, info = train_model(without_embeddings(train), without_embeddings(dev), args)
    log(f"    trained: best epoch {info['best_epoch']}, dev rSum {info['best_dev_rsum']:.2f}, "
        f"fusion {info['fusion']}, {info['train_seconds']}s")
    extra, needs, secs = learned_extra(model, builder, test, args.device)
    del model
    bank, why = dev_bank(test, dev)
    info["bank"] = why or "dev split anchors/captions, cross-modal encoder"
    t0 = time.perf_counter()
    report = compare(test, methods=methods, bank=bank, device=args.device, extra=extra, extra_needs=needs)
    for label in (LEARNED, LEARNED_FUSED):
        report.row(label).seconds = secs  # graph building + both re-rankings, shared
    log(f"    compared {len(report.rows)} rows in {time.perf_counter() - t0:.1f}s: base rSum "
        f"{report.base['rsum']:.2f}, learned {report.row(LEARNED).metrics['rsum']:.2f}, "
        f"+fusion {report.row(LEARNED_FUSED).metrics['rsum']:.2f}")
    return report, info


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


# ------------------------------------------------------------------ reporting
def _fmt_flag(v) -> str:
    return "?" if v is None else ("yes" if v else "-")


def _ok_rows(table: Dict) -> List[Dict]:
    return [r for r in table["rows"] if r["status"] == "ok"]


def _training_free(table: Dict) -> List[Dict]:
    return [r for r in _ok_rows(table) if r["method"] not in (LEARNED, LEARNED_FUSED)]


def summary_line(res: Dict) -> Dict[str, Any]:
    t = res["table"]
    rows = {r["method"]: r for r in _ok_rows(t)}
    tf = sorted(_training_free(t), key=lambda r: -r["metrics"]["rsum"])
    best = tf[0] if tf else None
    fused = rows[LEARNED_FUSED]["metrics"]["rsum"]
    return {"base": t["base"]["rsum"], "learned": rows[LEARNED]["metrics"]["rsum"], "fused": fused,
            "best_tf": best["method"] if best else None, "best_tf_rsum": best["metrics"]["rsum"] if best else None,
            "tf_above_fused": [r["method"] for r in tf if r["metrics"]["rsum"] > fused],
            "tf_same_flags_above_fused": [r["method"] for r in tf if r["metrics"]["rsum"] > fused
                                          and not r["needs"].get("bank") and not r["needs"].get("transductive")],
            "fusion": [c["learned"]["fusion"] for c in res["cases"]]}


def to_markdown(payload: Dict) -> str:
    cfg = payload["config"]
    out = [f"Command: `{payload['command']}`", "",
           "**These are caption-proxy results on real captions (each image is stood in for by one of its own "
           "captions; all retrieval is text-to-text), NOT image-text retrieval results, and are not "
           "comparable to published image-text numbers.**", "",
           f"Learned re-ranker: `PillarGraphBuilder(num_pillars=32)`, `PillarReranker(hidden_channels=128)` "
           f"(neighbour attention), `TrainConfig(epochs={cfg['epochs']}, seed={cfg['seed']})`, best epoch and "
           f"base-fusion weights selected on the protocol's dev split; CPU, {cfg['torch_threads']} torch "
           f"threads on a shared machine. Training-free re-rankers run with their published defaults; bank "
           f"methods use a query bank of the dev split's anchors and captions (the protocol's dev split, "
           f"same cross-modal encoder) scored against the test gallery. Encoders: `minilm` = all-MiniLM-L6-v2, "
           f"`tfidf` = raw TF-IDF fitted on the Flickr30K and COCO dev captions. Combo `CROSS:INTRA`: encoder "
           f"of the cross-modal score : encoder of the intra-modal similarities.", ""]
    if cfg.get("cuts"):
        out += ["What was cut to fit the time budget:", ""] + [f"- {c}" for c in cfg["cuts"]] + [""]
    if not cfg.get("complete", True):
        out += [f"**Partial: {len(payload['results'])} of {len(cfg['combos']) * len(cfg['protocols'])} "
                f"(combo, protocol) results so far.**", ""]
    if cfg.get("limit"):
        out += [f"Every split cut to its first {cfg['limit']} images (smoke run).", ""]
    out += ["## Summary (rSum)", "",
            "| combo | protocol | base | learned | learned + fusion | best training-free | "
            "training-free above learned + fusion |",
            "|---|---|---:|---:|---:|---|---|"]
    for res in payload["results"]:
        s = summary_line(res)
        best = f"{s['best_tf']} {s['best_tf_rsum']:.2f}" if s["best_tf"] else "-"
        above = ", ".join(s["tf_above_fused"]) or "none"
        out.append(f"| {res['combo']} | {res['protocol']} | {s['base']:.2f} | {s['learned']:.2f} "
                   f"({s['learned'] - s['base']:+.2f}) | {s['fused']:.2f} ({s['fused'] - s['base']:+.2f}) | "
                   f"{best} | {above} |")
    out += ["", "Honest reading:", ""]
    for res in payload["results"]:
        s = summary_line(res)
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
                         + (f" (of these, {', '.join(same)} use no bank and are not transductive)" if same
                            else " (all of them use a query bank or all test queries at once)"))
        if not notes:
            notes.append("learned + fusion beats the base and every training-free method")
        out.append(f"- {res['combo']}, {res['protocol']}: " + "; ".join(notes) + ".")
    for res in payload["results"]:
        t = res["table"]
        out += ["", f"## {res['combo']} - {res['title']}", ""]
        if len(res["cases"]) > 1:
            out.append(f"Metrics averaged over {len(res['cases'])} folds (base rSum per fold: "
                       + ", ".join(f"{x:.2f}" for x in t["base_rsum_per_fold"]) + ").")
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
        for r in sorted(_ok_rows(t), key=lambda r: (r["method"] in (LEARNED, LEARNED_FUSED), r["method"])):
            m = r["metrics"]
            name = f"**{r['method']}**" if r["method"] in (LEARNED, LEARNED_FUSED) else r["method"]
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
        out += ["", "Learned re-ranker per " + ("fold" if len(res["cases"]) > 1 else "run") + ": "
                + "; ".join(f"{c['test']}: trained on {c['learned']['train_images']} images x "
                            f"{c['learned']['train_texts']} captions, best epoch {c['learned']['best_epoch'] + 1}/{c['learned']['epochs_run']}, "
                            f"dev rSum {c['learned']['best_dev_rsum']:.2f}, fusion "
                            f"i2t {c['learned']['fusion']['i2t']:g} / t2i {c['learned']['fusion']['t2i']:g}, "
                            f"trained in {c['learned']['train_seconds']:.0f}s"
                            for c in res["cases"]) + "."]
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
        short = {LEARNED: "pillargraph (learned)", LEARNED_FUSED: "pillargraph (learned + fusion)"}
        names = [short.get(r["method"], r["method"]) for r in rows]
        vals = [r["delta"]["rsum"] for r in rows]
        colors = ["tab:orange" if r["method"] in (LEARNED, LEARNED_FUSED) else
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
    if args.epochs < 1 or args.folds < 2:
        raise ValueError("--epochs must be >= 1 and --folds >= 2")
    if args.limit is not None and args.limit < 2 * args.folds:
        raise ValueError(f"--limit: need at least {2 * args.folds} images")
    all_methods = list(available_rerankers())
    args.methods = parse_names(args.methods, "methods") or all_methods
    args.fold_methods = parse_names(args.fold_methods, "fold-methods") or args.methods
    args.methods = [get_reranker(m).name for m in args.methods]
    args.fold_methods = [get_reranker(m).name for m in args.fold_methods]
    cuts = []
    if args.epochs < DEFAULT_EPOCHS:
        cuts.append(f"the learned re-ranker trained for {args.epochs} epoch(s) instead of {DEFAULT_EPOCHS}")
    if args.train_images is not None:
        if args.train_images < 2:
            raise ValueError("--train-images: need at least 2")
        cuts.append(f"each learned re-ranker trained on only the first {args.train_images} images (and their "
                    f"captions) of its training pool in file order, not the whole pool; on the COCO folds that "
                    f"is the lowest-numbered other fold, so several folds share one training set (fold 1 "
                    f"trains on fold 2, every later fold on fold 1; no model sees its own test fold)")
    if args.max_folds is not None:
        if not 1 <= args.max_folds <= args.folds:
            raise ValueError(f"--max-folds: expected 1..{args.folds}")
        if args.max_folds < args.folds and "coco1k" in protocols:
            cuts.append(f"COCO 1K: only the first {args.max_folds} of {args.folds} folds were run and averaged")
    missing = [m for m in all_methods if m not in args.methods]
    if missing:
        cuts.append(f"training-free methods not run anywhere: {', '.join(missing)}")
    fold_missing = [m for m in args.methods if m not in args.fold_methods]
    if fold_missing and "coco1k" in protocols:
        cuts.append(f"on the COCO 1K folds only {', '.join(args.fold_methods)} ran; "
                    f"{', '.join(fold_missing)} ran on Flickr30K test only")
    return combos, protocols, cuts


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--combos", default="minilm:minilm,tfidf:minilm",
                   help="comma-separated CROSS:INTRA encoder pairs (minilm|tfidf)")
    p.add_argument("--protocols", default="transfer,coco1k", help="comma-separated: transfer, coco1k")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
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
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--out", default="benchmarks/results/caption_proxy", help="output path without extension")
    args = p.parse_args(argv)
    try:
        combos, protocols, cuts = check_args(args)
    except ValueError as err:
        p.error(str(err))
    all_methods = list(available_rerankers())
    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["benchmarks/caption_proxy.py", *(sys.argv[1:] if argv is None else argv)])
    device = args.device or "cpu"
    t_start = time.perf_counter()
    config = {"combos": [f"{c}:{i}" for c, i in combos], "protocols": protocols, "epochs": args.epochs,
              "seed": args.seed, "folds": args.folds, "max_folds": args.max_folds,
              "train_images": args.train_images, "methods": args.methods,
              "fold_methods": args.fold_methods, "all_methods": all_methods, "limit": args.limit,
              "device": device, "torch_threads": torch.get_num_threads(), "cuts": cuts,
              "anchor": 0, "tfidf_fit": ["f30k_dev", "coco_dev"],
              "learned": {"builder": {"num_pillars": 32}, "model": {"hidden_channels": 128},
                          "train": vars(TrainConfig(epochs=args.epochs, seed=args.seed))},
              "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    payload = {"command": command, "note": "caption-proxy results on real captions, NOT image-text results",
               "config": config, "results": []}
    out = Path(args.out)
    todo = len(combos) * len(protocols)
    for cross, intra in combos:
        data = Bundles(cross, intra, args.limit, device)
        for proto in protocols:
            log(f"combo {cross}:{intra}, protocol {proto}")
            res = run_protocol(proto, data, args)
            res["combo"] = f"{cross}:{intra}"
            payload["results"].append(res)
            config["seconds_total"] = round(time.perf_counter() - t_start, 1)
            config["complete"] = len(payload["results"]) == todo
            # written after every (combo, protocol), so an interrupted run keeps what it finished
            write_outputs(payload, out)
            log(f"  done in {res['seconds']}s; wrote {out}.md, .json, .png "
                f"({len(payload['results'])}/{todo})")
        del data
        gc.collect()
    print(to_markdown(payload))
    log(f"total {config['seconds_total']}s")
    return 0


def write_outputs(payload: Dict, out: Path) -> None:
    """``OUT.json``, ``OUT.md`` and ``OUT.png``, each atomically."""
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(payload, indent=1, default=str) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), to_markdown(payload).encode())
    plot(payload, out.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
