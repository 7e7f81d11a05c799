"""How a convolution takes the overlap weights (read from its signature)."""
from __future__ import annotations

import inspect
from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ["edge_input", "edge_kwargs"]


def edge_input(conv: torch.nn.Module) -> Optional[str]:
    """How a convolution takes edge weights: ``'edge_weight'``, ``'edge_attr'`` or :obj:`None`.

    Read from the signature of its ``forward``: an ``edge_weight`` argument
    takes weights :obj:`[E]`, an ``edge_attr`` argument takes them as a
    one-dimensional edge feature :obj:`[E, 1]`.
    """
    params = inspect.signature(conv.forward).parameters
    for name in ("edge_weight", "edge_attr"):
        if name in params:
            return name
    return None


def edge_kwargs(mode: Optional[str], edge_weight: Optional[Tensor]) -> Dict[str, Tensor]:
    """Keyword arguments passing :obj:`edge_weight` the way :func:`edge_input` said."""
    if mode is None or edge_weight is None:
        return {}
    if mode == "edge_attr":
        return {"edge_attr": edge_weight.view(-1, 1)}
    return {mode: edge_weight}
