"""Caption-proxy benchmark, protocols and data: what each protocol trains, selects and tests on, the row names
and flags of its tables, and the caption-proxy bundles of a combo (and the Flickr30K-train proxy with the models
trained on it for the paper-scale protocols).

Used by ``benchmarks/caption_proxy.py`` (the entry point; see its ``--help``), ``caption_proxy_runs.py`` and
``caption_proxy_report.py``; ``benchmarks/generalization.py`` reads its row names.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import the encoders

import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from pillargraph.baselines import QueryBank, TunedReranker, get_reranker
from pillargraph.bundle import SimilarityBundle
from pillargraph.data import ProxyEmbeddings, caption_proxy_bundle, resolve_text_encoder
from pillargraph.modality import DIRECTIONS
from pillargraph.train import FittedReranker, Recipe

from benchmarks.common import ProxyTrain, log, parse_combo, peak_rss_gib, recipe_for

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


# ------------------------------------------------------------------ paper-scale data (f30k, f30k-coco)
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

