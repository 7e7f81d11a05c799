"""Re-ranking losses over per-query candidate lists, vectorised over the batch.

Every function takes scores :obj:`[B, K]`, the positives :obj:`y` :obj:`[B, K]`
and a candidate mask :obj:`[K]` (the positions being ranked), as produced by
:class:`~pillargraph.nn.PillarReranker` on a :class:`~pillargraph.graphs.GraphBatch`.
"""
from .alignment import alignment_loss
from .contrastive import contrastive_loss
from .hinge import hinge_loss
from .pillar_loss import LOSS_DEFAULTS, PillarLoss
from .triplet import triplet_loss

__all__ = ["contrastive_loss", "triplet_loss", "hinge_loss", "alignment_loss", "PillarLoss", "LOSS_DEFAULTS"]
