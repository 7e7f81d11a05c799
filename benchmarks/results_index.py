"""Write ``benchmarks/results/README.md``: one line per results file, saying what it measures, the
command that made it, and the date and commit it was last committed at.

Usage::

    python benchmarks/results_index.py            # rewrite benchmarks/results/README.md
    python benchmarks/results_index.py --check    # exit 1 if a results file has no description

A results "file" is a stem: ``caption_proxy_f30k.md``, ``.json`` and ``.png`` are one entry. The
command comes from the file itself (a ``Command: `...` `` line in Markdown, a ``"command"`` field in
JSON, or a leading ``# `` line in text), the date and commit from ``git log``; a file not yet
committed says so. What each file measures is written below, by hand, once: a new results file
without a line in :data:`DESCRIPTIONS` fails ``--check`` and the test suite.

Time: about a second.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import description  # noqa: E402
from pillargraph.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
INDEX = "README.md"
PROXY = "caption proxy: text-to-text, not image-text"

#: What each results stem measures, grouped as the index shows them.
DESCRIPTIONS: Dict[str, Dict[str, str]] = {
    "Recipes (what `pillargraph train --recipe` gives)": {
        "recipes_29k_tfidf_minilm": f"the inductive recipe trained on all 29,000 Flickr30K-train images from neighbour "
                                    f"lists, 1 seed, Flickr30K test against every training-free method ({PROXY})",
        "recipes_29k_minilm_minilm": f"the inductive recipe on all 29,000 Flickr30K-train images' lists, minilm:minilm, "
                                     f"1 seed, Flickr30K test ({PROXY})",
        "recipes_29k_coco_tfidf_minilm": "inductive and transductive trained on all 29,000 Flickr30K-train images' "
                                         "lists, tfidf:minilm, 1 seed: Flickr30K test, COCO 1K and COCO 5K (with ECCV "
                                         "mAP@R and CxC R@1) against all 12 training-free methods (caption proxy: "
                                         "text-to-text, not image-text)",
        "recipes_29k_coco_minilm_minilm": "inductive and transductive trained on all 29,000 Flickr30K-train images' "
                                          "lists, minilm:minilm, 1 seed: Flickr30K test, COCO 1K and COCO 5K (with ECCV "
                                          "mAP@R and CxC R@1) against all 12 training-free methods (caption proxy: "
                                          "text-to-text, not image-text)",
        "recipes_29k_paper_tfidf_minilm": "the paper recipe on all 29,000 Flickr30K-train images' lists, tfidf:minilm, "
                                          "1 seed, Flickr30K test, COCO 1K and COCO 5K (with ECCV mAP@R and CxC R@1) "
                                          "(caption proxy: text-to-text, not image-text)",
        "recipes_29k_paper_minilm_minilm": "the paper recipe on all 29,000 Flickr30K-train images' lists, "
                                           "minilm:minilm, 1 seed, Flickr30K test, COCO 1K and COCO 5K (with ECCV "
                                           "mAP@R and CxC R@1) (caption proxy: text-to-text, not image-text)",
        "recipes_29k_tfidf_transductive": f"the transductive recipe on all 29,000 Flickr30K-train images' lists, "
                                          f"tfidf:minilm, 1 seed, Flickr30K test ({PROXY})",
        "recipes_10k_tfidf_minilm": f"the inductive and transductive recipes trained on 10,000 Flickr30K-train images "
                                    f"from neighbour lists, 1 seed, Flickr30K test ({PROXY})",
        "recipes_3k": f"the headline: the three recipes on a 3,000-image training slice, 3 seeds, Flickr30K test, both original "
                      f"combos, every training-free method at defaults, dev-tuned and dev-tuned + fusion ({PROXY})",
        "recipe_search": f"the dev search that chose the recipes' contents, Flickr30K dev ({PROXY})",
        "recipe_epochs": f"epochs and training-set size for the inductive recipe, Flickr30K dev ({PROXY})",
        "cli_parity": "`pillargraph train/rerank/evaluate` against `fit_reranker(recipe=...)` on the same files",
        "gallery_size_dev_inductive": f"inductive recipe on galleries 1x/5x/25x its episode size, dev ({PROXY})",
        "gallery_size_dev_transductive": f"transductive recipe on galleries 1x/5x/25x its episode size, dev ({PROXY})",
        "gallery_size_test_inductive": f"inductive recipe on galleries 1x/5x/25x its episode size, test ({PROXY})",
        "gallery_size_test_transductive": f"transductive recipe on galleries 1x/5x/25x its episode size, test "
                                          f"({PROXY})",
        "list_priors_tfidf": f"list-based priors against dense ones at K=100, tfidf:minilm dev ({PROXY})",
        "list_priors_minilm": f"list-based priors against dense ones at K=100, minilm:minilm dev ({PROXY})",
        "feature_probe_inductive_tfidf": f"linear probe over the inductive recipe's columns, tfidf:minilm dev ({PROXY})",
        "feature_probe_inductive_minilm": f"linear probe over the inductive recipe's columns, minilm:minilm dev "
                                          f"({PROXY})",
        "feature_probe_transductive_tfidf": f"linear probe over the transductive recipe's columns, tfidf:minilm dev "
                                            f"({PROXY})",
        "feature_probe_transductive_minilm": f"linear probe over the transductive recipe's columns, minilm:minilm dev "
                                             f"({PROXY})",
    },
    "Generalization and transfer across base scorers": {
        "base_scorers": f"each base scorer alone (minilm, tfidf, bm25, lsa), Flickr30K test and COCO 1K ({PROXY})",
        "generalization": f"every recipe on every base-scorer combo, Flickr30K test, 3 seeds ({PROXY})",
        "transfer": f"a model trained on one combo re-ranking another combo's test split, 3 seeds ({PROXY})",
        "transfer_epochs4": f"control for transfer_mixed: single-combo inductive models trained 4 epochs (4 times the "
                            f"compute) on tfidf:minilm and minilm:minilm, transferred both ways, 1 seed ({PROXY})",
        "transfer_mixed_inductive": f"inductive models trained on several combos at once: each combo re-ranked by "
                                    f"a model that never saw it, 2 seeds ({PROXY})",
        "transfer_mixed_transductive": f"transductive models trained on several combos at once: each combo re-ranked "
                                       f"by a model that never saw it, 2 seeds ({PROXY})",
        "layers_f30k": f"every GNN layer type and the ablations in the inductive recipe, tfidf:minilm and "
                       f"minilm:minilm, 3 seeds ({PROXY})",
    },
    "Earlier caption-proxy runs (before the recipes)": {
        "caption_proxy": f"first protocol: trained on the COCO 5K proxy, tested on Flickr30K and COCO 1K ({PROXY})",
        "caption_proxy_f30k": f"paper-scale `rank` variant on all 29,000 train images, Flickr30K, COCO 1K and 5K "
                              f"({PROXY})",
        "caption_proxy_f30k_prior": f"the transductive prior variant on 3,000 train images, Flickr30K and COCO 1K "
                                    f"({PROXY})",
        "caption_proxy_f30k_rank_3k": f"the `rank` variant on 3,000 train images, Flickr30K ({PROXY})",
        "caption_proxy_f30k_transductive": f"the `rank,reciprocal` variant on Flickr30K, one seed ({PROXY})",
        "learned_search": f"rounds 1-3 of the dev search over node features and settings ({PROXY})",
        "feature_probe_tfidf": f"linear probe of the earlier prior variant, tfidf:minilm dev ({PROXY})",
        "feature_probe_minilm": f"linear probe of the earlier prior variant, minilm:minilm dev ({PROXY})",
    },
    "Synthetic data": {
        "demo": "`pillargraph demo`: the default recipe on the built-in synthetic world",
        "compare_rerankers": "the learned re-ranker against every training-free method on synthetic data",
        "layers": "layer sweep and ablations on synthetic data, 3 seeds",
    },
    "Scale and speed": {
        "coco_scale": "COCO-train-size run: lists, graphs, one epoch, a 5K re-ranking, the 2-process epoch",
        "coco_scale_partial": "an earlier COCO-scale run stopped after 400 steps",
        "coco_scale_smoke_2000": "COCO-scale smoke run at 2,000 train images",
        "coco_scale_smoke_10000": "COCO-scale smoke run at 10,000 train images",
        "graph_build": "graph building for all queries against per-query loops, CPU",
        "train_speed_cpu": "`pillargraph train` on CPU before (977df0a) and after the speed work, side by side, "
                           "best of 2 (benchmarks/train_side_by_side.py)",
        "train_step_cpu": "one paper-size training step and the re-ranking throughput on CPU (benchmarks/train_speed.py)",
        "train_profile_cpu": "where the time of one `pillargraph train` epoch goes on CPU, stage by stage",
        "rerank_speed_cpu": "graph building and scoring of a 5,000-image test re-ranking from neighbour lists "
                            "under the default recipe, before (b88baa2) and after the sparse priors and batched "
                            "list gathers, side by side, best of 2 (the checkpoint and lists of `python "
                            "benchmarks/coco_scale.py --images 2000 --test-images 5000 --max-steps 20 --threads 1`)",
        "train_speed_h200": "paper-size training step and inference on an NVIDIA H200",
        "model_speed_h100": "paper-size model step on an NVIDIA H100",
    },
}


def stems(folder: Path = RESULTS) -> Dict[str, List[Path]]:
    """The results files of ``folder`` grouped by stem (the index itself left out)."""
    out: Dict[str, List[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != INDEX:
            out.setdefault(path.name.split(".")[0], []).append(path)
    return out


def recorded_command(files: Sequence[Path]) -> Optional[str]:
    """The command a results stem records, from its Markdown, JSON or text file."""
    for path in files:
        text = path.read_text(errors="replace") if path.suffix in (".md", ".txt", ".json", ".jsonl") else ""
        if path.suffix == ".md" and (m := re.search(r"Command: `([^`]+)`", text)):
            return m.group(1)
        if path.suffix == ".txt" and text.startswith("# "):
            return text.splitlines()[0][2:].split("  (")[0].strip()
        if path.suffix == ".json":
            try:
                command = json.loads(text).get("command")
            except (ValueError, AttributeError):
                command = None
            if isinstance(command, str):
                return command
    return None


def last_commit(files: Sequence[Path]) -> str:
    """``date, commit`` of the newest commit touching any of ``files``, or ``not committed yet``."""
    done = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%cs, %h", "--", *map(str, files)],
                          capture_output=True, text=True)
    return done.stdout.strip() or "not committed yet"


def shorten(command: str, limit: int = 160) -> str:
    """A long command (several runs joined by ``;``) cut for the index line; the file holds it whole."""
    return command if len(command) <= limit else command[:limit].rstrip() + " ..."


def render(folder: Path = RESULTS) -> str:
    """The index as Markdown."""
    found = stems(folder)
    lines = ["# Results index", "",
             "One line per results file in this folder: what it measures, the command that made it (the file "
             "holds it in full), and the date and commit it was last committed at. Written by "
             "`python benchmarks/results_index.py`. Caption-proxy results stand each image in by one of its "
             "captions: they are text-to-text figures, never image-text results.", ""]
    for group, described in DESCRIPTIONS.items():
        present = [s for s in described if s in found]
        if not present:
            continue
        lines += [f"## {group}", "", "| file | what it measures | command | last committed |", "|---|---|---|---|"]
        for stem in present:
            files = found[stem]
            names = ", ".join(p.name.split(".", 1)[1] for p in files)
            command = recorded_command(files)
            shown = f"`{shorten(command)}`" if command else "not recorded"
            lines.append(f"| `{stem}` (.{{{names}}}) | {described[stem]} | {shown} | {last_commit(files)} |")
        lines.append("")
    return "\n".join(lines)


def undescribed(folder: Path = RESULTS) -> List[str]:
    """Results stems with no line in :data:`DESCRIPTIONS`."""
    known = {s for described in DESCRIPTIONS.values() for s in described}
    return sorted(set(stems(folder)) - known)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that every results file is described")
    args = p.parse_args(argv)
    missing = undescribed()
    if missing:
        print(f"results_index: no description for {', '.join(missing)}: add a line to DESCRIPTIONS",
              file=sys.stderr)
        return 1
    if not args.check:
        atomic_write_text(RESULTS / INDEX, render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
