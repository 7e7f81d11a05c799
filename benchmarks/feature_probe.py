"""Linear probe of the candidate features: how far do the extra node features alone take a ranking?

Builds the query graphs of a learned variant (``benchmarks/common.py``
VARIANTS) on a caption-proxy training slice and on Flickr30K dev, then fits one
scorer per direction on the candidates' extra feature columns only (``rank``,
``reciprocal``, ``prior:<method>`` groups; no pillar features, no message
passing): linear by default, a one-hidden-layer MLP with ``--hidden H``. It is
trained full-batch with the multi-positive contrastive loss the re-ranker uses
and evaluated on dev in every output mode (:data:`pillargraph.rerank.OUTPUTS`),
alone and with the dev-selected base fusion. The probe is the floor a graph
network reading the same columns should clear; a gap between output modes says
how the two directions' rankings should be combined.

    python benchmarks/feature_probe.py --combo minilm:minilm --variant transductive \
        [--train-images 3000] [--form auto] [--steps 300] [--hidden 0] [--seed 0] \
        [--out benchmarks/results/feature_probe]

Writes ``OUT.json`` (command, config, results) and ``OUT.md`` atomically.
Caption-proxy numbers are text-to-text retrieval results, NOT image-text results.

Time: about 2-5 minutes at the defaults on 2 cores (estimated: the graphs of the 3,000 training images took 20
s in the recorded runs, then 300 full-batch steps of a small probe).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pillargraph.data import as_episodes
from pillargraph.graphs import GraphBatch, PillarGraphBuilder
from pillargraph.losses import contrastive_loss
from pillargraph.metrics import evaluate
from pillargraph.modality import DIRECTIONS
from pillargraph.rerank import OUTPUTS, combine_any, evaluate_any, rerank_scores, select_fusion_weights

from benchmarks.common import ProxyTrain, command_line, description, log, peak_rss_gib, variant, write_results


class FeatureProbe(torch.nn.Module):
    """One scorer per direction over the last ``extra`` feature columns of each node."""

    def __init__(self, extra: int, hidden: int = 0) -> None:
        super().__init__()

        def head() -> torch.nn.Module:
            if not hidden:
                return torch.nn.Linear(extra, 1)
            return torch.nn.Sequential(torch.nn.Linear(extra, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

        self.extra = extra
        self.heads = torch.nn.ModuleDict({d: head() for d in DIRECTIONS})

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        return self.heads[batch.direction](batch.x[..., -self.extra:]).squeeze(-1)


def fit_probe(probe: FeatureProbe, graphs: Dict[str, GraphBatch], steps: int, lr: float, tau: float) -> float:
    """Full-batch Adam on the summed per-direction contrastive losses; the final loss."""
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        loss = sum(contrastive_loss(probe(g), g.y, g.candidate_mask, tau=tau) for g in graphs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def run(args: argparse.Namespace) -> Dict[str, Any]:
    recipe = variant(args.variant)
    builder = PillarGraphBuilder(**recipe.builder)
    if not builder.num_extra_features:
        raise SystemExit(f"feature_probe: variant {args.variant!r} has no extra node features to probe")
    data = ProxyTrain(args.combo, args.train_images, args.form)
    train, dev = as_episodes(data.train_for(recipe), recipe.episode_images, data.episode_seed), data.dev
    t0 = time.perf_counter()
    train_graphs = {d: builder.build(train, d).graphs for d in DIRECTIONS}
    dev_graphs = {d: builder.build(dev, d) for d in DIRECTIONS}
    graphs_s = time.perf_counter() - t0
    log(f"graphs {graphs_s:.0f}s; {builder.num_extra_features} extra columns")
    torch.manual_seed(args.seed)
    probe = FeatureProbe(builder.num_extra_features, args.hidden)
    loss = fit_probe(probe, train_graphs, args.steps, args.lr, args.tau)
    with torch.no_grad():
        scored = rerank_scores(probe, dev, builder, dev_graphs)
        alone = {o: evaluate_any(combine_any(dev, scored, 1.0, 1.0, o))["rsum"] for o in OUTPUTS}
        fusion = select_fusion_weights(probe, dev, builder, output=OUTPUTS, scored=scored)
    weights = ({d: [round(float(w), 3) for w in probe.heads[d].weight.detach().view(-1)] for d in DIRECTIONS}
               if not args.hidden else None)
    return {"recipe": recipe.record(), "train": data.label(recipe), "builder": builder.config, "extra_columns": builder.num_extra_features, "final_loss": loss,
            "dev_base_rsum": evaluate(dev)["rsum"], "dev_probe_rsum": alone, "fusion": fusion.as_dict(),
            "linear_weights": weights, "graphs_s": round(graphs_s, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}


def markdown(payload: Dict[str, Any]) -> str:
    r, c = payload["result"], payload["config"]
    lines = [f"Command: `{payload['command']}`", "",
             f"Linear probe (hidden {c['hidden']}) of the `{c['variant']}` candidate features "
             f"({r['extra_columns']} columns) on {c['combo']}, trained on the Flickr30K-train proxy "
             f"({r['train']}), {c['steps']} full-batch steps; Flickr30K dev, caption "
             "proxy (text-to-text, NOT image-text results).", "",
             "| output | dev rSum, probe alone | dev rSum, best fusion |", "|---|---:|---:|"]
    for o in OUTPUTS:
        lines.append(f"| {o} | {r['dev_probe_rsum'][o]:.2f} | {r['fusion']['by_output'][o]:.2f} |")
    lines += ["", f"Base {r['dev_base_rsum']:.2f}; chosen: {r['fusion']['output']}, weights "
                  f"{r['fusion']['i2t']} / {r['fusion']['t2i']}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--combo", default="minilm:minilm")
    p.add_argument("--variant", default="transductive", help="a recipe, or a dev-search variant of benchmarks/common.py")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--form", default="auto", choices=("auto", "dense", "lists"),
                   help="training split as one dense bundle or as lists searched within the recipe's episodes")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--hidden", type=int, default=0, help="0: linear; H: one hidden layer of H units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/feature_probe")
    args = p.parse_args(argv)
    variant(args.variant)
    command = command_line("benchmarks/feature_probe.py", argv)
    payload = {"command": command, "config": vars(args), "result": run(args)}
    write_results(args.out, payload, markdown(payload))
    log(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
