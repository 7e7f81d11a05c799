r"""Training-free re-rankers as node features (``'prior:<method>'`` groups).

A ``prior`` group runs a training-free re-ranker of
:mod:`pillargraph.baselines` on the split the graphs are built from and hands
its verdict on every candidate to the model, so the network can learn when to
trust what KRNN, dual softmax or GNN re-ranking hand-code instead of
rediscovering it from pillar similarities. The scores enter through
:func:`~pillargraph.graphs.node_features.rank_features` (standardised score,
tie-aware rank, gap to the best candidate; 3 columns), which are invariant to
the scale of the re-ranker's output.

Spec strings name the method as :func:`~pillargraph.baselines.get_reranker`
does, with optional parameters in parentheses::

    prior:dual_softmax(temperature=0.1)
    prior:gnn_rerank(k1=10, k2=3)

A prior inherits the flags of its method: a transductive method (one that reads
all test queries at once) makes the model transductive. Methods that need a
query bank or raw embeddings cannot be priors (the builder sees neither).
Priors run on dense scores (a :class:`~pillargraph.SimilarityBundle`, or an
:class:`~pillargraph.data.EpisodicSimilarity` episode by episode) and, for the
methods of :data:`~pillargraph.baselines.lists.LIST_SCORERS` (dual softmax, GNN
re-ranking, alpha-QE), on :class:`~pillargraph.data.NeighborLists` too: their
scores of any pair come from the lists, equal to the dense ones when the lists
hold every item (see each scorer for what shallower lists leave out).
"""
from __future__ import annotations

import ast
import re
from typing import Any, Dict, Tuple, Union

from ..baselines import DIRECTIONS, Reranker, get_reranker
from ..baselines.lists import PairScores, list_scores
from ..bundle import SimilarityBundle
from ..data.episodes import EpisodicSimilarity
from ..data.neighbors import NeighborLists
from ..data.source import DenseSimilarity, SimilaritySource

__all__ = ["PRIOR_PREFIX", "is_prior", "parse_prior", "prior_reranker", "prior_scores"]

#: Prefix of a prior group's name.
PRIOR_PREFIX = "prior:"

_SPEC = re.compile(r"^prior:\s*([A-Za-z][\w\-. ]*?)\s*(?:\((.*)\))?\s*$")


def is_prior(group: str) -> bool:
    """Whether a node-feature group names a prior (``'prior:...'``)."""
    return isinstance(group, str) and group.startswith(PRIOR_PREFIX)


def parse_prior(group: str) -> Tuple[str, Dict[str, Any]]:
    """``'prior:gnn_rerank(k1=10, k2=3)'`` -> ``('gnn_rerank', {'k1': 10, 'k2': 3})``.

    Raises:
        ValueError: the spec does not parse (the message names it).
    """
    match = _SPEC.match(group) if isinstance(group, str) else None
    if match is None:
        raise ValueError(f"node_features: cannot read prior {group!r}; expected 'prior:NAME' or "
                         f"'prior:NAME(key=value, ...)'")
    name, args = match.group(1), match.group(2)
    params: Dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in (args or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"node_features: prior {group!r}: expected key=value, got {item!r}")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"node_features: prior {group!r}: {key.strip()}={value.strip()!r} "
                             f"is not a number, string or boolean") from None
    return name, params


def prior_reranker(group: str) -> Reranker:
    """The :class:`~pillargraph.baselines.Reranker` a prior group names.

    Raises:
        ValueError: unknown method or parameters, or a method that needs a query
            bank or raw embeddings.
    """
    name, params = parse_prior(group)
    try:
        method = get_reranker(name, **params)
    except ValueError as err:  # an unknown method or parameter: say which prior
        raise ValueError(f"node_features: prior {group!r}: {err}") from None
    if method.needs_bank or method.needs_embeddings:
        need = "a query bank" if method.needs_bank else "raw embeddings"
        raise ValueError(f"node_features: prior {group!r}: {method.name} needs {need}, "
                         f"which the graph builder does not have")
    return method


def prior_scores(source: SimilaritySource, method: Reranker) -> Dict[str, Union[SimilaritySource, PairScores]]:
    """``method``'s re-scored split, one source per direction.

    The returned source of direction ``d`` answers ``gather(d, queries,
    candidates)`` with the method's ``d`` scores, with the ids of ``source``
    (global ids for an episodic split, whose episodes are re-ranked one by one;
    for neighbour lists, :func:`~pillargraph.baselines.lists.list_scores`).

    Raises:
        ValueError: neighbour lists and a method without a list form, or another kind of source.
    """
    if isinstance(source, NeighborLists):
        try:
            scores = list_scores(method, source)
        except ValueError as err:
            raise ValueError(f"node_features: prior {method.name} on neighbour lists: {err}") from None
        return {d: scores for d in DIRECTIONS}
    if isinstance(source, DenseSimilarity):
        bundles = [source.bundle]
    elif isinstance(source, EpisodicSimilarity):
        bundles = [source.episode(e) for e in range(source.num_episodes)]
    else:
        raise ValueError(f"node_features: prior {method.name} needs a bundle, episodes or neighbour lists, "
                         f"not {type(source).__name__}")
    scored = [method(b) for b in bundles]

    def wrap(direction: str) -> SimilaritySource:
        parts = [SimilarityBundle(sim_i2t=s[direction].float(), txt2img=b.txt2img)
                 for s, b in zip(scored, bundles)]
        if isinstance(source, DenseSimilarity):
            return DenseSimilarity(parts[0])
        ids = [source.episode_ids(e) for e in range(source.num_episodes)]
        return EpisodicSimilarity(parts, [i for i, _ in ids], [t for _, t in ids])

    return {d: wrap(d) for d in DIRECTIONS}
