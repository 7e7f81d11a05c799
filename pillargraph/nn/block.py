"""A pre-norm residual block around any graph convolution."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ReasoningBlock"]


class ReasoningBlock(torch.nn.Module):
    r"""Pre-norm transformer-style block: graph convolution, then a position-wise MLP.

    .. math::
        \mathbf{X} &\leftarrow \mathbf{X} + \mathrm{Dropout}\big(
            \mathrm{Conv}(\mathrm{LN}(\mathbf{X}), \ldots)\big) \\
        \mathbf{X} &\leftarrow \mathbf{X} + \mathrm{Dropout}\big(
            \mathbf{W}_2\,\mathrm{GELU}(\mathbf{W}_1 \mathrm{LN}(\mathbf{X}))\big)

    The convolution is any module mapping :obj:`[N, C]` to :obj:`[N, C]`
    (e.g. :class:`~pillargraph.nn.NeighborAttentionConv` or a PyG
    convolution from :func:`~pillargraph.nn.conv_resolver`); extra
    arguments of :meth:`forward` go to it unchanged.

    Args:
        conv (torch.nn.Module): The graph convolution.
        channels (int): Feature size :math:`C`.
        mlp_ratio (float, optional): Hidden size of the MLP relative to
            :obj:`channels`. (default: :obj:`4.0`)
        dropout (float, optional): Dropout on both residual branches and
            inside the MLP. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(N, C)` (or :math:`(B, K, C)` for
          :meth:`forward_dense`)
        - **output:** same as the input
    """

    def __init__(self, conv: torch.nn.Module, channels: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: must be positive, got {mlp_ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must lie in [0, 1), got {dropout}")
        hidden = max(1, int(round(channels * mlp_ratio)))
        self.channels = channels
        self.mlp_ratio = mlp_ratio
        self.dropout = float(dropout)
        self.conv = conv
        self.norm1 = torch.nn.LayerNorm(channels)
        self.norm2 = torch.nn.LayerNorm(channels)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(channels, hidden),
            torch.nn.GELU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, channels),
        )

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        if hasattr(self.conv, "reset_parameters"):
            self.conv.reset_parameters()
        for module in (self.norm1, self.norm2, self.mlp[0], self.mlp[3]):
            module.reset_parameters()

    def _mlp_branch(self, x: Tensor) -> Tensor:
        return x + F.dropout(self.mlp(self.norm2(x)), p=self.dropout, training=self.training)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        r"""Applies the block; :obj:`args` and :obj:`kwargs` (edges, weights) go to the convolution."""
        x = x + F.dropout(self.conv(self.norm1(x), *args, **kwargs), p=self.dropout, training=self.training)
        return self._mlp_branch(x)

    def forward_dense(self, x: Tensor, adj: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        r"""Applies the block to dense graphs through the convolution's :obj:`forward_dense`.

        Args:
            x (Tensor): :obj:`[B, K, C]`.
            adj (Tensor, optional): :obj:`[B, K, K]` edge weights.
            mask (Tensor, optional): boolean attention mask, see
                :meth:`NeighborAttentionConv.forward_dense
                <pillargraph.nn.NeighborAttentionConv.forward_dense>`.
        """
        if not hasattr(self.conv, "forward_dense"):
            raise ValueError(f"conv: {self.conv.__class__.__name__} has no dense path (forward_dense)")
        x = x + F.dropout(self.conv.forward_dense(self.norm1(x), adj, mask), p=self.dropout,
                          training=self.training)
        return self._mlp_branch(x)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.conv}, channels={self.channels}, mlp_ratio={self.mlp_ratio})"
