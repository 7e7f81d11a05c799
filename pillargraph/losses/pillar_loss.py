"""The training objective of a pillar re-ranker: ranking losses per direction plus structure alignment."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .alignment import alignment_loss
from .contrastive import contrastive_loss
from .hinge import hinge_loss
from .triplet import triplet_loss

__all__ = ["PillarLoss", "LOSS_DEFAULTS"]


#: The one set of loss defaults, shared by :class:`PillarLoss` and
#: :class:`~pillargraph.train.TrainConfig`. The temperatures are the ones trained
#: and measured here (0.1); the prototype used ``tau=2.0`` and ``align_tau=1.0``
#: (pass them to reproduce it).
LOSS_DEFAULTS: Dict[str, float] = {"contrastive": 1.0, "triplet": 1.0, "alignment": 1.0,
                                   "mirror_contrastive": 1.0, "hinge": 0.0, "tau": 0.1, "margin": 0.2,
                                   "align_tau": 0.1, "hinge_margin": 0.0}


class PillarLoss(torch.nn.Module):
    r"""Weighted sum of the re-ranking losses of one training step, both directions.

    One step scores four lists: an image's i2t list with the i2t network
    (:obj:`i2t`), a caption's t2i list with the t2i network (:obj:`t2i`), and
    the same two lists mirrored and scored by the *other* network
    (:obj:`t2i_mirror`: the i2t list scored by the t2i network;
    :obj:`i2t_mirror`: the t2i list scored by the i2t network). Mirroring
    keeps the positives, so each mirrored list shares its original's
    :obj:`y` and candidate mask.

    .. math::
        \mathcal{L} = \sum_{d \in \{\mathrm{i2t}, \mathrm{t2i}\}}
        \lambda_c\, \ell_{\mathrm{con}}(s_d) + \lambda_t\, \ell_{\mathrm{tri}}(s_d)
        + \lambda_a\, \mathrm{KL}\big(s_d \,\Vert\, s_{\bar d}^{\mathrm{mirror}}\big)
        + \lambda_m\, \ell_{\mathrm{con}}(s_{\bar d}^{\mathrm{mirror}})
        + \lambda_h\, \ell_{\mathrm{hinge}}(s_d)

    Terms with weight 0 are not computed, and their inputs may be omitted.

    Args:
        contrastive (float, optional): :math:`\lambda_c`. (default: :obj:`1.0`)
        triplet (float, optional): :math:`\lambda_t`. (default: :obj:`1.0`)
        alignment (float, optional): :math:`\lambda_a`. (default: :obj:`1.0`)
        mirror_contrastive (float, optional): :math:`\lambda_m`. (default: :obj:`1.0`)
        hinge (float, optional): :math:`\lambda_h`. (default: :obj:`0.0`)
        tau (float, optional): Contrastive temperature (the prototype's: 2.0). (default: :obj:`0.1`)
        margin (float, optional): Triplet margin. (default: :obj:`0.2`)
        align_tau (float, optional): Alignment temperature (the prototype's: 1.0). (default: :obj:`0.1`)
        hinge_margin (float, optional): Hinge margin. (default: :obj:`0.0`)
    """

    def __init__(self, contrastive: float = LOSS_DEFAULTS["contrastive"],
                 triplet: float = LOSS_DEFAULTS["triplet"], alignment: float = LOSS_DEFAULTS["alignment"],
                 mirror_contrastive: float = LOSS_DEFAULTS["mirror_contrastive"],
                 hinge: float = LOSS_DEFAULTS["hinge"], tau: float = LOSS_DEFAULTS["tau"],
                 margin: float = LOSS_DEFAULTS["margin"], align_tau: float = LOSS_DEFAULTS["align_tau"],
                 hinge_margin: float = LOSS_DEFAULTS["hinge_margin"]) -> None:
        super().__init__()
        weights = dict(contrastive=contrastive, triplet=triplet, alignment=alignment,
                       mirror_contrastive=mirror_contrastive, hinge=hinge)
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name}: loss weights must be non-negative, got {value}")
        if tau <= 0 or align_tau <= 0:
            raise ValueError(f"tau, align_tau: must be positive, got {tau}, {align_tau}")
        self.weights = weights
        self.tau, self.margin, self.align_tau, self.hinge_margin = tau, margin, align_tau, hinge_margin

    def to_config(self) -> Dict[str, float]:
        """Constructor arguments as a plain dict."""
        return dict(self.weights, tau=self.tau, margin=self.margin, align_tau=self.align_tau,
                    hinge_margin=self.hinge_margin)

    def forward(self, i2t: Tensor, t2i: Tensor, t2i_mirror: Optional[Tensor] = None,
                i2t_mirror: Optional[Tensor] = None, *, y_i2t: Tensor, y_t2i: Tensor,
                mask_i2t: Optional[Tensor] = None, mask_t2i: Optional[Tensor] = None,
                base_i2t: Optional[Tensor] = None, base_t2i: Optional[Tensor] = None
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""Computes the total loss and its parts.

        Args:
            i2t (Tensor): :obj:`[B, K_i]` i2t network on image queries' lists.
            t2i (Tensor): :obj:`[B', K_t]` t2i network on caption queries' lists.
            t2i_mirror (Tensor, optional): :obj:`[B, K_i]` t2i network on the
                mirrored i2t lists (needed for alignment / mirror terms).
            i2t_mirror (Tensor, optional): :obj:`[B', K_t]` i2t network on the
                mirrored t2i lists.
            y_i2t (Tensor): :obj:`[B, K_i]` bool positives of the i2t lists.
            y_t2i (Tensor): :obj:`[B', K_t]` bool positives of the t2i lists.
            mask_i2t (Tensor, optional): :obj:`[K_i]` candidate positions.
            mask_t2i (Tensor, optional): :obj:`[K_t]` candidate positions.
            base_i2t (Tensor, optional): :obj:`[B, K_i]` base scores (hinge only).
            base_t2i (Tensor, optional): :obj:`[B', K_t]` base scores (hinge only).

        Returns:
            ``(total, parts)``: the differentiable scalar loss and a dict of
            detached per-direction terms (``'contrastive_i2t'``, ...) plus ``'total'``.
        """
        w = self.weights
        terms: Dict[str, Tensor] = {}
        lists = {"i2t": (i2t, y_i2t, mask_i2t, t2i_mirror, base_i2t),
                 "t2i": (t2i, y_t2i, mask_t2i, i2t_mirror, base_t2i)}
        for d, (scores, y, mask, mirror, base) in lists.items():
            if w["contrastive"]:
                terms[f"contrastive_{d}"] = contrastive_loss(scores, y, mask, tau=self.tau)
            if w["triplet"]:
                terms[f"triplet_{d}"] = triplet_loss(scores, y, mask, margin=self.margin)
            if w["alignment"] or w["mirror_contrastive"]:
                if mirror is None:
                    other = "t2i" if d == "i2t" else "i2t"
                    raise ValueError(f"{other}_mirror: needed by the alignment and mirror_contrastive terms "
                                     f"(set their weights to 0 to train without them)")
                if w["alignment"]:
                    terms[f"alignment_{d}"] = alignment_loss(scores, mirror, mask, tau=self.align_tau)
                if w["mirror_contrastive"]:
                    terms[f"mirror_contrastive_{d}"] = contrastive_loss(mirror, y, mask, tau=self.tau)
            if w["hinge"]:
                if base is None:
                    raise ValueError(f"base_{d}: needed by the hinge term (weight {w['hinge']})")
                terms[f"hinge_{d}"] = hinge_loss(scores, base, mask, margin=self.hinge_margin)
        total = sum(w[name.rsplit("_", 1)[0]] * value for name, value in terms.items())
        if not terms:
            total = i2t.sum() * 0.0
        parts = {name: value.detach() for name, value in terms.items()}
        parts["total"] = total.detach()
        return total, parts

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_config().items())
