"""Choosing a re-ranker by name, like :mod:`torch_geometric.nn.resolver`."""
from __future__ import annotations

from typing import Any, Dict, Union

from .base import REGISTRY, Reranker, normalize_name

__all__ = ["reranker_resolver", "get_reranker", "available_rerankers"]


def available_rerankers() -> Dict[str, type]:
    """All registered re-rankers, ``{name: class}``, sorted by name."""
    classes = {cls.name: cls for cls in REGISTRY.values()}
    return dict(sorted(classes.items()))


def reranker_resolver(query: Union[str, Reranker, type], **kwargs: Any) -> Reranker:
    """Turn a name, a class or an instance into a :class:`~pillargraph.baselines.Reranker`.

    Names are matched ignoring case and the separators ``_ - . space``, against
    each method's ``name``, its class name and its aliases: ``'alpha_qe'``,
    ``'AlphaQE'`` and ``'alpha-qe'`` are the same method.

    Args:
        query: a name, a :class:`Reranker` subclass or an instance (returned as is;
            then no ``kwargs`` are allowed).
        **kwargs: the method's parameters, overriding its published defaults.

    Raises:
        ValueError: unknown name (the message lists the choices), or
            parameters passed along with an instance.
    """
    if isinstance(query, Reranker):
        if kwargs:
            raise ValueError(f"reranker_resolver: got an instance {query!r} and parameters "
                             f"{sorted(kwargs)}; pass a name or a class to set parameters")
        return query
    if isinstance(query, type) and issubclass(query, Reranker):
        return query(**kwargs)
    if not isinstance(query, str):
        raise ValueError(f"reranker: expected a name, a Reranker class or instance, "
                         f"got {type(query).__name__}")
    cls = REGISTRY.get(normalize_name(query))
    if cls is None:
        raise ValueError(f"reranker: unknown method {query!r}; choose from "
                         f"{list(available_rerankers())}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{cls.name}: bad parameters {sorted(kwargs)} ({err})") from None


def get_reranker(name: Union[str, Reranker, type], **params: Any) -> Reranker:
    """Alias of :func:`reranker_resolver`: ``get_reranker('alpha_qe', n=5)``."""
    return reranker_resolver(name, **params)
