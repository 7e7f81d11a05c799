r"""Named training recipes: the builder, model, training and episode settings of a learned re-ranker.

A recipe is everything that decides a model except the data and the seed. The
command line (``pillargraph train --recipe NAME``), the Python API
(:func:`~pillargraph.train.fit_reranker` with ``recipe=``) and the benchmarks
all read the recipes from here, so the model a user trains is the model the
results tables report.

* ``paper``: the method as published (Qu et al., SIGIR 2023): pillar features
  only, the two directions' re-rankings averaged, trained on the whole split.
  Sized for CPUs (hidden 128, 4 heads; the paper uses 768 and 24). For
  reference and ablations.
* ``inductive`` (the default): the best setting that reads one query's
  neighbourhood at a time, so it re-ranks queries online (a search service):
  a query's scores do not depend on which other queries are re-ranked with it.
* ``transductive``: the best setting overall. Its node features include
  training-free re-rankers that read *all test queries at once* (dual softmax,
  GNN re-ranking) and the query's place in each candidate's own ranking of the
  queries, so it re-ranks a whole split, never one query alone.

Settings chosen on the Flickr30K dev caption proxy
(``benchmarks/results/learned_search.md``); explicit arguments override single
fields (:meth:`Recipe.override`), and the run records the recipe's name, the
overrides and every resolved setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..data.episodes import as_episodes
from ..data.partition import check_episode_sizes, episode_sizes_label
from ..graphs import PillarGraphBuilder
from ..graphs.node_features import is_transductive
from ..nn import PillarReranker
from .config import TrainConfig

__all__ = ["Recipe", "RECIPES", "DEFAULT_RECIPE", "get_recipe", "recipe_table", "RecipeRun", "prepare_run", "recipe_parts"]

#: Training-free re-rankers that read one query's neighbourhood (published defaults), node features of both
#: the ``inductive`` and the ``transductive`` recipe.
INDUCTIVE_PRIORS = ("prior:alpha_qe", "prior:dba")
#: Training-free re-rankers that read all test queries (parameters tuned on dev in both caption-proxy combos).
TRANSDUCTIVE_PRIORS = ("prior:dual_softmax(temperature=0.1)", "prior:gnn_rerank(k1=10, k2=3)")


def _frozen(d: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Recipe:
    """A named set of builder, model, training and episode settings.

    Args:
        name (str): the recipe's name.
        summary (str): one line for ``--help`` and the docs.
        builder (mapping): :class:`~pillargraph.graphs.PillarGraphBuilder` arguments.
        model (mapping): :class:`~pillargraph.nn.PillarReranker` arguments beyond the input sizes.
        train (mapping): :class:`~pillargraph.train.TrainConfig` fields (the seed excluded).
        episode_images (tuple of int): images per training episode, cycled
            (:func:`~pillargraph.data.partition.episode_partition`); ``()`` trains on the
            whole split.
        overrides (mapping): what :meth:`override` changed, by part (recorded with the run).
    """

    name: str
    summary: str
    builder: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    episode_images: Tuple[int, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("builder", "model", "train", "overrides"):
            object.__setattr__(self, part, _frozen(getattr(self, part)))
        sizes = tuple(self.episode_images)
        object.__setattr__(self, "episode_images", check_episode_sizes(sizes) if sizes else ())

    @property
    def transductive(self) -> bool:
        """Whether the model reads all test queries at once (see the module docstring)."""
        return is_transductive(self.builder.get("node_features", ()))

    @property
    def online(self) -> bool:
        """Whether a query can be re-ranked on its own: no transductive features, and no output that mixes
        the two directions' re-rankings (``'fused'`` reads the other direction's lists of other queries)."""
        outputs = self.train.get("fusion_outputs", TrainConfig.fusion_outputs)
        return not self.transductive and "fused" not in outputs

    @property
    def reads(self) -> str:
        """What the model reads at test time, in words."""
        if self.transductive:
            return "all test queries at once (transductive)"
        if not self.online:
            return ("one query's neighbourhood per direction, but its fused output mixes both directions' "
                    "re-rankings (not online)")
        return "one query's neighbourhood at a time (inductive, works online)"

    def override(self, builder: Optional[Mapping[str, Any]] = None, model: Optional[Mapping[str, Any]] = None,
                 train: Optional[Mapping[str, Any]] = None,
                 episode_images: Union[int, Sequence[int], None] = None) -> "Recipe":
        """A copy with single fields replaced; the changes are kept in :attr:`overrides`.

        Args:
            builder, model, train: fields to replace in each part.
            episode_images: new episode sizes (``0`` or ``()``: the whole split).
        """
        changes: Dict[str, Any] = {}
        done = {part: dict(self.overrides.get(part, {})) for part in ("builder", "model", "train")}
        for part, new in (("builder", builder), ("model", model), ("train", train)):
            if new:
                changes[part] = {**getattr(self, part), **new}
                done[part].update(new)
        overrides: Dict[str, Any] = {p: v for p, v in done.items() if v}
        if episode_images is not None:
            sizes = () if episode_images in (0, (), [], (0,), [0]) else (
                (episode_images,) if isinstance(episode_images, int) else tuple(episode_images))
            changes["episode_images"] = check_episode_sizes(sizes) if sizes else ()
            overrides["episode_images"] = list(changes["episode_images"])
        elif "episode_images" in self.overrides:
            overrides["episode_images"] = self.overrides["episode_images"]
        return replace(self, **changes, overrides=overrides)

    def record(self) -> Dict[str, Any]:
        """JSON-friendly form for ``config.json``, checkpoints and results files."""
        return {"name": self.name, "reads": self.reads, "transductive": self.transductive, "online": self.online,
                "builder": _plain(self.builder), "model": _plain(self.model), "train": _plain(self.train),
                "episode_images": list(self.episode_images),
                "overrides": {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in self.overrides.items()}}

    def describe(self) -> str:
        """The recipe on one line: name, what it reads, episodes and the settings that differ from defaults."""
        episodes = (f"episodes of {episode_sizes_label(self.episode_images)} images" if self.episode_images
                    else "the whole training split")
        parts = [f"{k}={v}" for part in (self.builder, self.model, self.train) for k, v in part.items()]
        return f"{self.name}: reads {self.reads}; trains on {episodes}; {', '.join(parts)}"


def _plain(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


_CPU_MODEL = {"layer": "neighbor_attention", "hidden_channels": 128, "num_layers": 2, "heads": 4, "dropout": 0.1}

#: The recipes by name.
RECIPES: Dict[str, Recipe] = {r.name: r for r in (
    Recipe("paper", "the method as published: pillar features only, the two directions averaged, the whole "
                    "training split (CPU-sized model)",
           builder={"num_pillars": 64, "k_i2t": 32, "k_t2i": 8, "overlap_neighbors": 10, "sparsity": 0.8,
                    "node_features": ()},
           model=_CPU_MODEL, train={"epochs": 3, "fusion_outputs": ("fused",)}),
    Recipe("inductive", "the best model that reads one query's neighbourhood at a time (works online)",
           builder={"num_pillars": 32, "k_i2t": 32, "k_t2i": 32, "node_features": ("rank",) + INDUCTIVE_PRIORS},
           model=_CPU_MODEL, train={"epochs": 3, "fusion_outputs": ("directions",)}, episode_images=(1000,)),
    Recipe("transductive", "the best model overall; reads all test queries at once (training-free priors "
                           "and reciprocal ranks as node features)",
           builder={"num_pillars": 32, "k_i2t": 32, "k_t2i": 32,
                    "node_features": ("rank", "reciprocal") + TRANSDUCTIVE_PRIORS + INDUCTIVE_PRIORS[:1]},
           model=_CPU_MODEL, train={"epochs": 3}, episode_images=(1000, 5000)),
)}
#: The recipe ``pillargraph train`` uses when none is named.
DEFAULT_RECIPE = "inductive"


def get_recipe(recipe: Union[str, Recipe, None] = None) -> Recipe:
    """The recipe of that name (case and ``-``/``_`` ignored), a :class:`Recipe` unchanged, or the default.

    Raises:
        ValueError: an unknown name (the message lists the recipes).
    """
    if recipe is None:
        return RECIPES[DEFAULT_RECIPE]
    if isinstance(recipe, Recipe):
        return recipe
    key = str(recipe).strip().lower().replace("-", "_")
    if key not in RECIPES:
        raise ValueError(f"recipe: unknown recipe {recipe!r}; expected one of {list(RECIPES)}")
    return RECIPES[key]


def recipe_table() -> str:
    """Every recipe on its own line (:meth:`Recipe.describe`), for ``--help`` and the docs."""
    return "\n".join(r.describe() for r in RECIPES.values())



@dataclass
class RecipeRun:
    """What a recipe resolves to for one training run (:func:`prepare_run`).

    Attributes:
        recipe: the recipe.
        builder: its :class:`~pillargraph.graphs.PillarGraphBuilder`.
        model: a freshly initialised :class:`~pillargraph.nn.PillarReranker` sized to the builder.
        config: the :class:`~pillargraph.train.TrainConfig`, with the run's seed.
        train: the training split in the recipe's episodes.
        run_info: what :class:`~pillargraph.train.Trainer` records besides builder, model and config.
    """

    recipe: Recipe
    builder: PillarGraphBuilder
    model: PillarReranker
    config: TrainConfig
    train: Any
    run_info: Dict[str, Any]


def prepare_run(recipe: Union[str, Recipe, None], train: Any, seed: int = 0, episode_seed: int = 0,
                name: str = "train") -> RecipeRun:
    """Everything a recipe decides for one run: builder, model (initialised from ``seed``), config, and
    ``train`` cut into the recipe's episodes (:func:`~pillargraph.data.as_episodes`, seeded by
    ``episode_seed``; a list of dense splits is cut split by split and mixed into one). The one sequence the
    command line, :func:`~pillargraph.train.fit_reranker` and the benchmarks share.

    Raises:
        ValueError: an unknown recipe, an invalid setting, or a training split that cannot be cut
            into the recipe's episodes (the message names ``name`` and what to do).
    """
    recipe = get_recipe(recipe)
    builder, model, config = recipe_parts(recipe, seed)
    episodes = as_episodes(train, recipe.episode_images, episode_seed, name)
    return RecipeRun(recipe, builder, model, config, episodes,
                     {"recipe": recipe.record(), "episode_seed": episode_seed})


def recipe_parts(recipe: Union[str, Recipe, None] = None,
                 seed: int = 0) -> Tuple[PillarGraphBuilder, PillarReranker, TrainConfig]:
    """A recipe's builder, a model sized to it and initialised from ``seed``, and its training config.

    Raises:
        ValueError: an unknown recipe or an invalid setting (the message names it).
    """
    recipe = get_recipe(recipe)
    builder = PillarGraphBuilder(**recipe.builder)
    config = TrainConfig(**{**recipe.train, "seed": seed})
    torch.manual_seed(seed)
    model = PillarReranker(builder.num_features, extra_channels=builder.num_extra_features, **recipe.model)
    return builder, model, config
