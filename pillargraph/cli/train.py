"""``pillargraph train --train T.npz --dev D.npz --out RUN_DIR [options]``."""
from __future__ import annotations

import argparse
import json
from typing import Tuple

import torch

from ..data.files import load_split
from ..device import resolve_device
from ..graphs import PillarGraphBuilder
from ..graphs.node_features import NODE_FEATURES, split_node_features
from ..io import ensure_writable_dir
from ..losses import LOSS_DEFAULTS
from ..nn import PillarReranker
from ..train import TrainConfig, Trainer
from ..train.distributed import DistributedTrainer, init_from_env, shutdown


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Graph, model and training options shared by ``train`` and ``demo``."""
    g = p.add_argument_group("graphs")
    g.add_argument("--num-pillars", type=int, default=32, help="pillars per half, L (paper: 64)")
    g.add_argument("--k-i2t", type=int, default=32, help="nodes of an image query's graph (31 candidates)")
    g.add_argument("--k-t2i", type=int, default=8, help="nodes of a caption query's graph (7 candidates)")
    g.add_argument("--overlap-neighbors", type=int, default=10, help="C, neighbours compared for overlap")
    g.add_argument("--sparsity", type=float, default=0.8, help="gamma of the overlap sparsification")
    g.add_argument("--anchor", default="both", choices=("both", "inter", "intra"),
                   help="pillar halves to use (ablation: inter-only, intra-only)")
    g.add_argument("--node-features", default="",
                   help=f"extra candidate features beside the pillar space, comma-separated: "
                        f"{', '.join(NODE_FEATURES)}, prior:METHOD(key=value ...) (a training-free re-ranker's "
                        f"scores; 'reciprocal' and transductive priors read other test queries)")
    m = p.add_argument_group("model")
    m.add_argument("--layer", default="neighbor_attention",
                   help="reasoning layer: neighbor_attention, transformer, gatv2, gat, gcn, sage, gin, graph")
    m.add_argument("--hidden", type=int, default=64, help="hidden channels (paper: 768)")
    m.add_argument("--layers", type=int, default=2, help="reasoning layers")
    m.add_argument("--heads", type=int, default=4, help="attention heads (paper: 24)")
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument("--no-edge-weight", action="store_true", help="ablation: ignore overlap edge weights")
    m.add_argument("--feature-skip", type=float, default=0.0, metavar="SCALE",
                   help="add a learned linear function of the --node-features columns to every score, "
                        "scaled by SCALE (0: off)")
    m.add_argument("--share-directions", action="store_true", help="one network for both directions")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--optimizer", default=TrainConfig.optimizer, choices=("adamw", "sgd"))
    t.add_argument("--patience", type=int, default=TrainConfig.patience)
    t.add_argument("--no-align", action="store_true", help="ablation: no structure-alignment loss")
    loss = p.add_argument_group("loss (defaults: pillargraph.losses.LOSS_DEFAULTS)")
    for name, default in LOSS_DEFAULTS.items():
        loss.add_argument(f"--{name.replace('_', '-')}", type=float, default=default, metavar="X",
                          help=f"PillarLoss {name} (default: {default:g})")
    t.add_argument("--fusion-outputs", default=",".join(TrainConfig.fusion_outputs), metavar="MODES",
                   help="output modes the dev selection chooses from with the fusion weights, comma-separated "
                        f"(default: {','.join(TrainConfig.fusion_outputs)}; see `pillargraph rerank --output`)")
    t.add_argument("--compile", action="store_true", help="torch.compile the training step (CUDA)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")


def split_outputs(text: str) -> Tuple[str, ...]:
    """``'fused,directions'`` as a tuple (checked by :class:`~pillargraph.train.TrainConfig`)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def components(args: argparse.Namespace):
    """Builder, model and training config from parsed arguments."""
    features = split_node_features(args.node_features)
    builder = PillarGraphBuilder(num_pillars=args.num_pillars, k_i2t=args.k_i2t, k_t2i=args.k_t2i,
                                 overlap_neighbors=args.overlap_neighbors, sparsity=args.sparsity,
                                 anchor=args.anchor, node_features=features)
    losses = {name: getattr(args, name) for name in LOSS_DEFAULTS}
    if args.no_align:
        losses.update(alignment=0.0, mirror_contrastive=0.0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, patience=args.patience, seed=args.seed,
                         compile=args.compile, fusion_outputs=split_outputs(args.fusion_outputs), **losses)
    torch.manual_seed(args.seed)
    model = PillarReranker(builder.num_features, extra_channels=builder.num_extra_features,
                           layer=args.layer, hidden_channels=args.hidden,
                           num_layers=args.layers, heads=args.heads, dropout=args.dropout,
                           share_directions=args.share_directions,
                           use_edge_weight=not args.no_edge_weight, feature_skip=args.feature_skip)
    return builder, model, config


def run(args: argparse.Namespace) -> int:
    """Train; under ``torchrun`` every process runs this, rank 0 alone writes and prints."""
    device = resolve_device(args.device)
    context = init_from_env(device)  # one process unless started by torchrun
    try:
        if context.distributed and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
        if context.is_main:
            ensure_writable_dir(args.out)  # before the splits are read and an epoch is spent
        train = load_split(args.train)
        dev = load_split(args.dev)
        builder, model, config = components(args)
        if context.distributed:
            trainer = DistributedTrainer(model, builder, config, out_dir=args.out, device=device, context=context)
        else:
            trainer = Trainer(model, builder, config, out_dir=args.out, device=device)
        result = trainer.fit(train, dev, resume=args.resume)
    finally:
        shutdown(context)
    if context.is_main:
        print(json.dumps({"best_epoch": result.best_epoch, "best_dev_rsum": result.best_dev_rsum,
                          "epochs_run": result.epochs_run, "fusion": result.fusion,
                          "checkpoint": str(args.out) + "/best.pt"}, indent=2))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a re-ranker on a train split, selecting on a dev split",
                       description="Train a learned pillar re-ranker.")
    p.add_argument("--train", required=True, help="training split .npz: a bundle or neighbour lists "
                                                  "(`pillargraph neighbors`)")
    p.add_argument("--dev", required=True, help="dev split .npz, bundle or neighbour lists (model and "
                                                "fusion-weight selection; lists need depth 11+ for R@10)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, config.json, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    add_model_arguments(p)
    p.set_defaults(func=run)
