"""Layer normalisation applied separately to equal slices of the feature vector."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SplitLayerNorm"]


class SplitLayerNorm(torch.nn.Module):
    r"""Layer normalisation of each of :obj:`splits` equal slices of the last dimension.

    Pillar features are the concatenation of the inter-modal half (similarities
    to the cross-modal pillars) and the intra-modal half; the two have
    different scales, so each half is normalised on its own, then one affine
    map is applied to the whole vector:

    .. math::
        \mathbf{x}' = \big[\,\mathrm{norm}(\mathbf{x}_{1}) \,\Vert\, \cdots \,\Vert\,
        \mathrm{norm}(\mathbf{x}_{S})\,\big] \odot \boldsymbol{\gamma} + \boldsymbol{\beta}

    Args:
        channels (int): Feature size; must be divisible by :obj:`splits`.
        splits (int, optional): Number of slices. (default: :obj:`2`)
        eps (float, optional): Added to the variance. (default: :obj:`1e-5`)

    Shapes:
        - **input:** :math:`(*, C)`
        - **output:** :math:`(*, C)`
    """

    def __init__(self, channels: int, splits: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        if splits <= 0 or channels <= 0 or channels % splits != 0:
            raise ValueError(f"splits: must be positive and divide channels ({channels}), got {splits}")
        self.channels = channels
        self.splits = splits
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.empty(channels))
        self.bias = torch.nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        torch.nn.init.ones_(self.weight)
        torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Normalises each slice, then scales and shifts."""
        if x.shape[-1] != self.channels:
            raise ValueError(f"x: expected last dimension {self.channels}, got {list(x.shape)}")
        part = self.channels // self.splits
        normed = F.layer_norm(x.unflatten(-1, (self.splits, part)), (part,), eps=self.eps).flatten(-2)
        return normed * self.weight + self.bias

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, splits={self.splits})"
