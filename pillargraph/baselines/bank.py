"""A query bank: extra queries (e.g. the training split) scored against the test gallery."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..bundle import ArrayLike, SimilarityBundle
from ..io import atomic_write, read_npz

__all__ = ["QueryBank"]

_KEYS = ("bank_i2t", "bank_t2i")


def _as_float_matrix(value: ArrayLike, name: str) -> Tensor:
    t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a float dtype, got {t.dtype}")
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D matrix, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} non-finite value(s) (NaN or inf)")
    return t


@dataclass(frozen=True, eq=False)
class QueryBank:
    r"""Extra queries scored against the test gallery, for bank-based normalisers.

    Methods such as inverted softmax, QB-Norm, NNN and DBNorm estimate how
    "hubby" each gallery item is from queries that are not the test queries.
    A bank holds those scores for either direction or both.

    Args:
        bank_i2t (Tensor, optional): :obj:`[B_i, M]`, bank *images* scored
            against the test captions (used for image-to-text retrieval).
        bank_t2i (Tensor, optional): :obj:`[B_t, N]`, bank *captions* scored
            against the test images (used for text-to-image retrieval).

    At least one must be given. Shapes against a gallery are checked by
    :meth:`validate_against` (re-rankers call it).
    """

    bank_i2t: Optional[Tensor] = None
    bank_t2i: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.bank_i2t is None and self.bank_t2i is None:
            raise ValueError("QueryBank: give bank_i2t, bank_t2i or both")
        for key in _KEYS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _as_float_matrix(value, key))

    @property
    def num_bank_images(self) -> int:
        """Rows of :attr:`bank_i2t` (0 when absent)."""
        return 0 if self.bank_i2t is None else self.bank_i2t.shape[0]

    @property
    def num_bank_texts(self) -> int:
        """Rows of :attr:`bank_t2i` (0 when absent)."""
        return 0 if self.bank_t2i is None else self.bank_t2i.shape[0]

    def validate_against(self, gallery: SimilarityBundle) -> None:
        """Check the column counts against a test bundle's ``M`` captions and ``N`` images."""
        if self.bank_i2t is not None and self.bank_i2t.shape[1] != gallery.num_texts:
            raise ValueError(f"bank_i2t: has {self.bank_i2t.shape[1]} columns, but the test bundle "
                             f"has {gallery.num_texts} captions")
        if self.bank_t2i is not None and self.bank_t2i.shape[1] != gallery.num_images:
            raise ValueError(f"bank_t2i: has {self.bank_t2i.shape[1]} columns, but the test bundle "
                             f"has {gallery.num_images} images")

    @classmethod
    def from_embeddings(cls, gallery_bundle: SimilarityBundle,
                        bank_img_emb: Optional[ArrayLike] = None,
                        bank_txt_emb: Optional[ArrayLike] = None) -> "QueryBank":
        """Cosine similarities of bank embeddings against the test bundle's embeddings.

        Args:
            gallery_bundle: the test bundle; needs ``txt_emb`` when
                ``bank_img_emb`` is given and ``img_emb`` when ``bank_txt_emb`` is.
            bank_img_emb: :obj:`[B_i, d]` bank image embeddings.
            bank_txt_emb: :obj:`[B_t, d]` bank caption embeddings.
        """
        if bank_img_emb is None and bank_txt_emb is None:
            raise ValueError("QueryBank.from_embeddings: give bank_img_emb, bank_txt_emb or both")
        out = {}
        pairs = (("bank_i2t", bank_img_emb, "bank_img_emb", gallery_bundle.txt_emb, "txt_emb"),
                 ("bank_t2i", bank_txt_emb, "bank_txt_emb", gallery_bundle.img_emb, "img_emb"))
        for key, emb, emb_name, gal, gal_name in pairs:
            if emb is None:
                continue
            if gal is None:
                raise ValueError(f"{emb_name}: the test bundle has no {gal_name} to score it against; "
                                 f"build it with SimilarityBundle.from_embeddings(...)")
            e = _as_float_matrix(emb, emb_name).to(device=gal.device, dtype=gal.dtype)
            if e.shape[1] != gal.shape[1]:
                raise ValueError(f"{emb_name}: dimension {e.shape[1]} differs from the bundle's "
                                 f"{gal_name} dimension {gal.shape[1]}")
            e = torch.nn.functional.normalize(e, dim=-1)
            out[key] = e @ torch.nn.functional.normalize(gal, dim=-1).T
        return cls(**out)

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Optional[torch.dtype] = None) -> "QueryBank":
        """A copy on ``device`` (and ``dtype``)."""
        return replace(self, **{k: getattr(self, k).to(device=device, dtype=dtype)
                                for k in _KEYS if getattr(self, k) is not None})

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write an uncompressed ``.npz`` with keys ``bank_i2t``/``bank_t2i`` (atomically)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
        arrays = {k: getattr(self, k).detach().cpu().numpy() for k in _KEYS
                  if getattr(self, k) is not None}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "QueryBank":
        """Read a bank written by :meth:`save`.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: unknown keys, no bank key, or invalid contents.
        """
        arrays = read_npz(path, "query bank", _KEYS)
        if not arrays:
            raise ValueError(f"{path}: holds neither bank_i2t nor bank_t2i")
        return cls(**{k: torch.from_numpy(v) for k, v in arrays.items()})

    def __repr__(self) -> str:
        parts = [f"{k}={tuple(getattr(self, k).shape)}" for k in _KEYS if getattr(self, k) is not None]
        return f"QueryBank({', '.join(parts)})"
