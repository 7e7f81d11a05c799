"""Training configuration."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

from ..losses.pillar_loss import LOSS_DEFAULTS
from ..rerank import DEFAULT_FUSION_OUTPUTS, check_outputs

__all__ = ["TrainConfig"]

_OPTIMIZERS = ("sgd", "adamw")
# Float settings and their bounds; every one must also be finite (see TrainConfig.check_setting).
_POSITIVE = ("lr", "tau", "align_tau", "grad_clip")
_NON_NEGATIVE = ("weight_decay", "min_lr_ratio", "contrastive", "triplet", "alignment", "mirror_contrastive",
                 "hinge", "margin", "hinge_margin")


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in every checkpoint and results file).

    Args:
        epochs (int): passes over the training captions (default: :obj:`10`).
        batch_size (int): caption items per step; each carries its caption's
            t2i graph, its image's i2t graph and both mirrored lists (default: :obj:`128`).
        optimizer (str): ``'adamw'`` or ``'sgd'`` (momentum 0.9, the prototype's)
            (default: :obj:`'adamw'`).
        lr (float): peak learning rate (default: :obj:`1e-3`).
        weight_decay (float): decoupled weight decay (default: :obj:`1e-4`).
        warmup_steps (int): linear warm-up before the per-step cosine decay (default: :obj:`50`).
        min_lr_ratio (float): final learning rate as a fraction of ``lr`` (default: :obj:`0.01`).
        grad_clip (float, optional): max gradient norm; ``None`` disables (default: :obj:`1.0`).
        amp (bool, optional): bfloat16 autocast; ``None`` means on for CUDA only (default).
        seed (int): seeds initialisation, shuffling, dropout and positive sampling (default: :obj:`0`).
        patience (int, optional): stop after this many evaluations without a dev
            rSum improvement; ``None`` never stops early (default: :obj:`4`).
        eval_every (int): evaluate on dev every this many epochs (default: :obj:`1`).
        contrastive (float): weight of the multi-positive contrastive loss (default: :obj:`1.0`).
        triplet (float): weight of the local triplet loss (default: :obj:`1.0`).
        alignment (float): weight of the structure-alignment KL terms; ``0``
            disables the mirrored lists altogether (default: :obj:`1.0`).
        mirror_contrastive (float): weight of the contrastive loss on the
            mirrored lists (default: :obj:`1.0`).
        hinge (float): weight of the optional hinge against the base top-K
            minimum (default: :obj:`0.0`; write-back makes it unnecessary).
        tau (float): contrastive temperature (default: :obj:`0.1`).
        margin (float): triplet margin (default: :obj:`0.2`).
        align_tau (float): temperature of the alignment softmaxes (default: :obj:`0.1`).
        hinge_margin (float): margin of the hinge against the base top-K minimum (default: :obj:`0.0`).
        compile (bool): run each step's forward passes and loss under
            :func:`torch.compile` (worth it on CUDA at large sizes: 17 ms instead of
            35 ms per paper-size batch-512 step on an H200) (default: :obj:`False`).
        select_fusion (bool): after training, choose the base-score fusion weights
            on the dev split and store them with the best checkpoint (default: :obj:`True`).
        fusion_outputs (tuple of str): output modes (:data:`pillargraph.rerank.OUTPUTS`)
            the dev selection chooses from, with the fusion weights; the dev rSum that
            picks the best epoch is the best of them too. ``'fused'`` mixes the two
            directions' re-rankings (the paper), ``'directions'`` keeps each direction's
            own, as the training-free re-rankers do; ties go to the first
            (default: :obj:`('fused', 'directions')`).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    grad_clip: Optional[float] = 1.0
    amp: Optional[bool] = None
    seed: int = 0
    patience: Optional[int] = 4
    eval_every: int = 1
    # loss weights and temperatures: one set of defaults, pillargraph.losses.LOSS_DEFAULTS
    contrastive: float = LOSS_DEFAULTS["contrastive"]
    triplet: float = LOSS_DEFAULTS["triplet"]
    alignment: float = LOSS_DEFAULTS["alignment"]
    mirror_contrastive: float = LOSS_DEFAULTS["mirror_contrastive"]
    hinge: float = LOSS_DEFAULTS["hinge"]
    tau: float = LOSS_DEFAULTS["tau"]
    margin: float = LOSS_DEFAULTS["margin"]
    align_tau: float = LOSS_DEFAULTS["align_tau"]
    hinge_margin: float = LOSS_DEFAULTS["hinge_margin"]
    compile: bool = False
    select_fusion: bool = True
    fusion_outputs: Tuple[str, ...] = DEFAULT_FUSION_OUTPUTS

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer: unknown optimizer {self.optimizer!r}; expected one of {list(_OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in _POSITIVE + _NON_NEGATIVE:
            if not (name == "grad_clip" and self.grad_clip is None):
                self.check_setting(name, getattr(self, name))
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be non-negative, got {self.warmup_steps}")
        self.fusion_outputs = check_outputs(self.fusion_outputs, "fusion_outputs")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience: must be at least 1 or None, got {self.patience}")

    @staticmethod
    def check_setting(name: str, value: Any) -> None:
        """Check one float setting (a learning rate, loss weight, margin or temperature) on its own.

        Every such setting must be a finite number; ``lr``, ``grad_clip`` and the
        temperatures must be positive, the others non-negative. A NaN or infinite
        value would train NaN weights, whose re-ranking silently falls back to the
        base ranking. The command line checks each flag with this as it parses it.

        Raises:
            ValueError: ``'{name}: must be a positive, finite number, got ...'`` (or non-negative).
        """
        positive = name in _POSITIVE
        if name not in _POSITIVE + _NON_NEGATIVE:
            raise ValueError(f"{name}: not a float training setting")
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            raise ValueError(f"{name}: must be a {'positive' if positive else 'non-negative'}, finite number, "
                             f"got {value}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form (JSON- and checkpoint-friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ValueError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown training option(s) {unknown}")
        return cls(**data)
