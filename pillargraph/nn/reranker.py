"""The learnable pillar re-ranker: one graph network per retrieval direction."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor

from ..graphs.batch import GraphBatch
from ..modality import DIRECTIONS, check_direction
from .pillar_graph_net import PillarGraphNet

__all__ = ["PillarReranker"]


class PillarReranker(torch.nn.Module):
    r"""Learnable pillar-based re-ranker of `"Learnable Pillar-based Re-ranking for
    Image-Text Retrieval" <https://arxiv.org/abs/2304.12570>`_ (Qu et al., SIGIR 2023).

    Holds one :class:`PillarGraphNet` per direction (``'i2t'``, ``'t2i'``), or
    one shared by both, and scores a :class:`~pillargraph.graphs.GraphBatch`
    with the network of its direction. The paper's model is
    ``PillarReranker(128, hidden_channels=768, heads=24)`` (about 28.5M
    parameters); the defaults are sized for CPUs.

    All arguments except :obj:`share_directions` are those of
    :class:`PillarGraphNet`; :meth:`to_config` / :meth:`from_config` rebuild
    the model from a plain dict (e.g. stored in a checkpoint).

    Args:
        in_channels (int): Pillar feature size :math:`F` (:math:`2L`, or
            :math:`L` with one anchor half).
        layer (str, optional): Convolution name, see
            :data:`~pillargraph.nn.CONVS`; a module instance also works but
            cannot go into a config. (default: :obj:`'neighbor_attention'`)
        hidden_channels (int, optional): Width. (default: :obj:`256`)
        num_layers (int, optional): Reasoning blocks. (default: :obj:`2`)
        heads (int, optional): Attention heads. (default: :obj:`4`)
        dropout (float, optional): Dropout in the blocks. (default: :obj:`0.1`)
        share_directions (bool, optional): One network for both directions.
            (default: :obj:`False`)
        split_norm (bool, optional): See :class:`PillarGraphNet`. (default: :obj:`True`)
        use_edge_weight (bool, optional): See :class:`PillarGraphNet`. (default: :obj:`True`)
        attend (str, optional): ``'auto'``, ``'graph'`` or ``'edges'``, see
            :data:`~pillargraph.nn.ATTEND_MODES`. (default: :obj:`'auto'`)
        hetero (bool, optional): Per-relation convolutions. (default: :obj:`False`)
        mlp_ratio (float, optional): MLP width factor. (default: :obj:`4.0`)
        **kwargs (optional): Further :class:`PillarGraphNet` arguments
            (:obj:`attention_dropout`, :obj:`hetero_aggr`, :obj:`dense`,
            :obj:`layer_kwargs`, :obj:`extra_channels`, :obj:`feature_skip`).

    Shapes:
        - **input:** :class:`~pillargraph.graphs.GraphBatch` with :obj:`x` :math:`(B, K, F)`
        - **output:** :math:`(B, K)` cosine scores against node 0
    """

    def __init__(self, in_channels: int, layer: Union[str, torch.nn.Module] = "neighbor_attention",
                 hidden_channels: int = 256, num_layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 share_directions: bool = False, split_norm: bool = True, use_edge_weight: bool = True,
                 attend: str = "auto", hetero: bool = False, mlp_ratio: float = 4.0, **kwargs: Any) -> None:
        super().__init__()
        net_args = dict(layer=layer, hidden_channels=hidden_channels, num_layers=num_layers, heads=heads,
                        dropout=dropout, split_norm=split_norm, use_edge_weight=use_edge_weight,
                        attend=attend, hetero=hetero, mlp_ratio=mlp_ratio, **kwargs)
        self._config: Dict[str, Any] = dict(in_channels=in_channels, share_directions=share_directions, **net_args)
        self.share_directions = share_directions
        names = ("shared",) if share_directions else DIRECTIONS
        self.nets = torch.nn.ModuleDict({name: PillarGraphNet(in_channels, **net_args) for name in names})

    @property
    def in_channels(self) -> int:
        """Pillar feature size the model expects."""
        return self._config["in_channels"]

    def network(self, direction: str) -> PillarGraphNet:
        """The network that scores ``direction`` (``'i2t'`` or ``'t2i'``)."""
        check_direction(direction)
        return self.nets["shared" if self.share_directions else direction]

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for net in self.nets.values():
            net.reset_parameters()

    def forward(self, batch: GraphBatch, direction: Optional[str] = None) -> Tensor:
        r"""Scores every node of every query graph against its query node.

        Args:
            batch (GraphBatch): Query graphs.
            direction (str, optional): Score with this direction's network
                instead of :obj:`batch.direction` (for the mirrored lists of
                the structure-alignment loss). (default: :obj:`None`)

        Returns:
            Tensor: :obj:`[B, K]` scores, in :math:`[-1, 1]` unless the
            networks have a ``feature_skip``; only the positions in
            :obj:`batch.candidate_mask` are meaningful rankings.
        """
        return self.network(batch.direction if direction is None else direction)(batch)

    @property
    def config(self) -> Dict[str, Any]:
        """Constructor arguments (a copy); see :meth:`to_config`."""
        return self.to_config()

    def to_config(self) -> Dict[str, Any]:
        """The constructor arguments as a plain dict, so :meth:`from_config` can rebuild the model.

        Raises:
            ValueError: if the layer was given as a module instance.
        """
        if isinstance(self._config["layer"], torch.nn.Module):
            raise ValueError("layer: a model built from a module instance has no config; pass the layer by name")
        config = dict(self._config)
        if config.get("layer_kwargs") is not None:
            config["layer_kwargs"] = dict(config["layer_kwargs"])
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "PillarReranker":
        """Builds an untrained model from :meth:`to_config`'s dict.

        Raises:
            ValueError: for a missing ``in_channels`` or an unknown key.
        """
        if not isinstance(config, dict) or "in_channels" not in config:
            raise ValueError("config: expected a dict with at least 'in_channels'")
        allowed = set(inspect.signature(cls.__init__).parameters) | set(
            inspect.signature(PillarGraphNet.__init__).parameters)
        unknown = sorted(set(config) - allowed - {"self", "kwargs"})
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}")
        return cls(**config)

    def extra_repr(self) -> str:
        c = self._config
        layer = c["layer"] if isinstance(c["layer"], str) else c["layer"].__class__.__name__
        return (f"in_channels={c['in_channels']}, layer={layer!r}, hidden_channels={c['hidden_channels']}, "
                f"num_layers={c['num_layers']}, heads={c['heads']}, share_directions={c['share_directions']}")
