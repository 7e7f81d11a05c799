"""``pillargraph train --train T.npz [T2.npz ...] --dev D.npz --out RUN_DIR [options]``."""
from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..data.files import load_split
from ..data.partition import check_episode_sizes
from ..device import resolve_device
from ..graphs.node_features import NODE_FEATURES, split_node_features
from ..losses import LOSS_DEFAULTS
from ..train import DEFAULT_RECIPE, RECIPES, Recipe, TrainConfig, Trainer, get_recipe, prepare_run, recipe_parts, recipe_table
from ..train.distributed import DistributedTrainer, init_from_env, shutdown
from . import CLIError
from .checks import check_splits, run_folder, setting_type


#: ``--flag`` destination -> (recipe part, field) for the settings a flag overrides.
_BUILDER_FLAGS = {"num_pillars": "num_pillars", "k_i2t": "k_i2t", "k_t2i": "k_t2i",
                  "overlap_neighbors": "overlap_neighbors", "sparsity": "sparsity", "anchor": "anchor"}
_MODEL_FLAGS = {"layer": "layer", "hidden": "hidden_channels", "layers": "num_layers", "heads": "heads",
                "dropout": "dropout", "feature_skip": "feature_skip"}
_TRAIN_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
                "patience": "patience", **{name: name for name in LOSS_DEFAULTS}}
_FROM_RECIPE = "(default: from --recipe)"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Recipe, graph, model and training options shared by ``train`` and ``demo``.

    Every setting defaults to the recipe's (``--recipe``, default ``inductive``);
    a flag given on the command line overrides that one field.
    """
    r = p.add_argument_group("recipe (see the list below)")
    r.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="NAME",
                   help=f"named settings: {', '.join(RECIPES)} (default: {DEFAULT_RECIPE})")
    r.add_argument("--episode-images", default=None, metavar="N[,N...]",
                   help="train in episodes of N images (several sizes are cycled; 0: the whole training split); "
                        "neighbour lists must have been searched in the same episodes "
                        "(`pillargraph neighbors --episode-images`) " + _FROM_RECIPE)
    r.add_argument("--episode-seed", type=int, default=0, help="seed of the episode partition (default: 0)")
    g = p.add_argument_group("graphs")
    g.add_argument("--num-pillars", type=int, default=None, help="pillars per half, L (paper: 64) " + _FROM_RECIPE)
    g.add_argument("--k-i2t", type=int, default=None, help="nodes of an image query's graph, K " + _FROM_RECIPE)
    g.add_argument("--k-t2i", type=int, default=None, help="nodes of a caption query's graph " + _FROM_RECIPE)
    g.add_argument("--overlap-neighbors", type=int, default=None, help="C, neighbours compared for overlap")
    g.add_argument("--sparsity", type=float, default=None, help="gamma of the overlap sparsification")
    g.add_argument("--anchor", default=None, choices=("both", "inter", "intra"),
                   help="pillar halves to use (ablation: inter-only, intra-only)")
    g.add_argument("--node-features", default=None,
                   help=f"extra candidate features beside the pillar space, comma-separated: "
                        f"{', '.join(NODE_FEATURES)}, prior:METHOD(key=value ...) (a training-free re-ranker's "
                        f"scores; 'reciprocal' and transductive priors read other test queries); '' for none "
                        + _FROM_RECIPE)
    m = p.add_argument_group("model")
    m.add_argument("--layer", default=None,
                   help="reasoning layer: neighbor_attention, transformer, gatv2, gat, gcn, sage, gin, graph")
    m.add_argument("--hidden", type=int, default=None, help="hidden channels (paper: 768) " + _FROM_RECIPE)
    m.add_argument("--layers", type=int, default=None, help="reasoning layers")
    m.add_argument("--heads", type=int, default=None, help="attention heads (paper: 24)")
    m.add_argument("--dropout", type=float, default=None)
    m.add_argument("--no-edge-weight", action="store_true", help="ablation: ignore overlap edge weights")
    m.add_argument("--feature-skip", type=float, default=None, metavar="SCALE",
                   help="add a learned linear function of the --node-features columns to every score, "
                        "scaled by SCALE (0: off)")
    m.add_argument("--share-directions", action="store_true", help="one network for both directions")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help=_FROM_RECIPE)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=setting_type(TrainConfig.check_setting, "lr"), default=None)
    t.add_argument("--optimizer", default=None, choices=("adamw", "sgd"))
    t.add_argument("--patience", type=int, default=None)
    t.add_argument("--no-align", action="store_true", help="ablation: no structure-alignment loss")
    loss = p.add_argument_group("loss (defaults: pillargraph.losses.LOSS_DEFAULTS, unless the recipe sets them)")
    for name, default in LOSS_DEFAULTS.items():
        loss.add_argument(f"--{name.replace('_', '-')}", type=setting_type(TrainConfig.check_setting, name),
                          default=None, metavar="X",
                          help=f"PillarLoss {name} (default: {default:g})")
    t.add_argument("--fusion-outputs", default=None, metavar="MODES",
                   help="output modes the dev selection chooses from with the fusion weights, comma-separated "
                        f"(default: {','.join(TrainConfig.fusion_outputs)} unless the recipe sets them; see "
                        "`pillargraph rerank --output`)")
    t.add_argument("--compile", action="store_true", help="torch.compile the training step (CUDA)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")


def recipes_epilog() -> str:
    """The recipes as ``--help`` lists them: name, what each reads, its settings."""
    return "recipes (settings chosen on the Flickr30K dev caption proxy):\n" + "\n".join(
        "  " + line for line in recipe_table().splitlines())


def split_outputs(text: str) -> Tuple[str, ...]:
    """``'fused,directions'`` as a tuple (checked by :class:`~pillargraph.train.TrainConfig`)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_episode_images(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``--episode-images``: ``N`` or ``N,N,...`` (``0``: none); ``None`` when not given."""
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"--episode-images: expected N or N,N,... (whole numbers), got {text!r}") from None
    if sizes == (0,):
        return ()
    try:
        return check_episode_sizes(sizes, "--episode-images")
    except ValueError as err:
        raise CLIError(str(err)) from None


def components(args: argparse.Namespace):
    """Builder, model (from ``--seed``) and training config of the parsed options' recipe, without episodes."""
    return recipe_parts(recipe_from_args(args), args.seed)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The named recipe with every flag given on the command line as an override."""
    builder = {field: getattr(args, flag) for flag, field in _BUILDER_FLAGS.items() if getattr(args, flag) is not None}
    if args.node_features is not None:
        builder["node_features"] = split_node_features(args.node_features)
    model = {field: getattr(args, flag) for flag, field in _MODEL_FLAGS.items() if getattr(args, flag) is not None}
    if args.no_edge_weight:
        model["use_edge_weight"] = False
    if args.share_directions:
        model["share_directions"] = True
    train = {field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if args.no_align:
        train.update(alignment=0.0, mirror_contrastive=0.0)
    if args.fusion_outputs is not None:
        train["fusion_outputs"] = split_outputs(args.fusion_outputs)
    if args.compile:
        train["compile"] = True
    return get_recipe(args.recipe).override(builder=builder, model=model, train=train,
                                            episode_images=parse_episode_images(args.episode_images))


def run(args: argparse.Namespace) -> int:
    """Train; under ``torchrun`` every process runs this, rank 0 alone writes and prints."""
    device = resolve_device(args.device)
    context = init_from_env(device)  # one process unless started by torchrun
    try:
        if context.distributed and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
        # made before the splits are read and an epoch is spent; removed again if it fails before a checkpoint
        with run_folder(args.out) if context.is_main else nullcontext():
            recipe = recipe_from_args(args)
            train = [load_split(path) for path in args.train]  # several: one per base scorer, mixed
            dev = load_split(args.dev)
            name = " ".join(map(str, args.train))
            run = prepare_run(recipe, train[0] if len(train) == 1 else train, args.seed, args.episode_seed,
                              name=name)
            check_splits(run.builder, train=(name, run.train), dev=(args.dev, dev))
            parts = (run.model, run.builder, run.config)
            if context.distributed:
                trainer = DistributedTrainer(*parts, out_dir=args.out, device=device, context=context,
                                             run_info=run.run_info)
            else:
                trainer = Trainer(*parts, out_dir=args.out, device=device, run_info=run.run_info)
            trainer.run_info["dev_split"] = str(Path(args.dev).resolve())  # rerank selects the fusion on it
            trainer.run_info["train_splits"] = [str(Path(path).resolve()) for path in args.train]
            result = trainer.fit(run.train, dev, resume=args.resume)
    finally:
        shutdown(context)
    if context.is_main:
        print(json.dumps({"recipe": recipe.name, "overrides": recipe.record()["overrides"],
                          "best_epoch": result.best_epoch, "best_dev_rsum": result.best_dev_rsum,
                          "epochs_run": result.epochs_run, "fusion": result.fusion,
                          "checkpoint": str(args.out) + "/best.pt"}, indent=2))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a re-ranker on a train split, selecting on a dev split",
                       description="Train a learned pillar re-ranker with a named recipe (--recipe); flags "
                                   "override single settings of the recipe.",
                       epilog=recipes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, nargs="+", metavar="TRAIN.npz",
                   help="training split .npz: a bundle or neighbour lists (`pillargraph neighbors`); several "
                        "bundles (e.g. the same images scored by several base models) train one model on all "
                        "of them, each cut into the recipe's episodes")
    p.add_argument("--dev", required=True, help="dev split .npz, bundle or neighbour lists (model and "
                                                "fusion-weight selection; lists need depth 11+ for R@10)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, config.json, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    add_model_arguments(p)
    p.set_defaults(func=run)
