"""One retrieval problem: the scores of a base retriever plus its ground truth."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .io import atomic_write, read_npz

__all__ = ["SimilarityBundle", "ArrayLike", "as_tensor", "check_txt2img"]

ArrayLike = Union[Tensor, np.ndarray, Sequence]

_FLOAT_FIELDS = ("sim_i2t", "sim_i2i", "sim_t2t", "img_emb", "txt_emb", "sim_t2i")
_FIELD_NAMES = ("sim_i2t", "txt2img", "sim_i2i", "sim_t2t", "img_emb", "txt_emb", "sim_t2i")


def as_tensor(value: Any, name: str) -> Tensor:
    """``value`` (a tensor, NumPy array or nested list) as a :class:`torch.Tensor`, without a copy when
    it already is one.

    Raises:
        ValueError: it cannot be converted; the message names the field ``name``.
    """
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be converted to a tensor ({err})") from None


def check_txt2img(value: Any, num_images: int, num_texts: Optional[int] = None) -> Tensor:
    """``txt2img`` checked and as a long tensor: a 1-D integer index of each caption's image.

    Args:
        value: the index.
        num_images: images of the split (values must lie in ``[0, num_images)``
            and every image needs a caption).
        num_texts: captions of the split, when known elsewhere (the length must match).

    Raises:
        ValueError: not an integer 1-D index (of ``num_texts`` entries), a value
            out of range, or an image without a caption.
    """
    t = as_tensor(value, "txt2img")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"txt2img: expected an integer dtype, got {t.dtype}")
    if t.dim() != 1 or t.numel() == 0 or (num_texts is not None and t.numel() != num_texts):
        want = f"shape ({num_texts},), one entry per caption," if num_texts else "a non-empty 1-D index,"
        raise ValueError(f"txt2img: expected {want} got shape {tuple(t.shape)}")
    t = t.long()
    if int(t.min()) < 0 or int(t.max()) >= num_images:
        raise ValueError(f"txt2img: values must lie in [0, {num_images}), got range "
                         f"[{int(t.min())}, {int(t.max())}]")
    counts = torch.bincount(t, minlength=num_images)
    if bool((counts == 0).any()):
        raise ValueError(f"txt2img: {int((counts == 0).sum())} image(s) have no caption (every image needs "
                         f"at least one), e.g. image {int((counts == 0).nonzero()[0])}")
    return t


def _check_float(t: Tensor, name: str, shape: tuple) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a float dtype, got {t.dtype}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = " x ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected shape ({want}), got {tuple(t.shape)}")
    # one pass without a temporary: a non-finite entry makes the sum non-finite (an overflowing sum of
    # finite entries only sends it to the exact count, which finds nothing)
    if not bool(torch.isfinite(t.sum())):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{name}: contains {bad} non-finite value(s) (NaN or inf)")


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return a @ b.T


@dataclass(frozen=True, eq=False)
class SimilarityBundle:
    r"""The scores of a base retriever on one split, plus the ground truth.

    pillargraph never sees pixels or tokens: a bundle is everything the
    re-rankers, the graph builders and the metrics need.

    Args:
        sim_i2t (Tensor): cross-modal similarity, shape :obj:`[N, M]`
            (``N`` images, ``M`` captions).
        txt2img (Tensor): :obj:`[M]` int, the image each caption describes. Any
            number of captions per image is allowed, at least one per image.
        sim_i2i (Tensor, optional): image-image similarity :obj:`[N, N]`.
        sim_t2t (Tensor, optional): caption-caption similarity :obj:`[M, M]`.
        img_emb (Tensor, optional): image embeddings :obj:`[N, d]`.
        txt_emb (Tensor, optional): caption embeddings :obj:`[M, d]`.
        sim_t2i (Tensor, optional): :obj:`[M, N]` scores that rank the images for
            each caption query, stored only when they differ from ``sim_i2t.T``:
            a re-ranked result whose two directions were re-scored separately
            (each keeps its own top-K guarantee, which one matrix cannot do for
            both). Metrics, re-rankers and graph builders read t2i rankings from
            :attr:`t2i_scores`, i.e. from this field when present.

    Numpy arrays are accepted and converted to tensors (without a copy where
    possible). Construction validates shapes, dtypes, finiteness and the
    ground truth, and raises :class:`ValueError` naming the offending field.
    """

    sim_i2t: Tensor
    txt2img: Tensor
    sim_i2i: Optional[Tensor] = None
    sim_t2t: Optional[Tensor] = None
    img_emb: Optional[Tensor] = None
    txt_emb: Optional[Tensor] = None
    sim_t2i: Optional[Tensor] = None

    def __post_init__(self) -> None:
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if name == "sim_i2t" and value is None:
                raise ValueError("sim_i2t: is required")
            if name == "txt2img" and value is None:
                raise ValueError("txt2img: is required")
            if value is not None:
                object.__setattr__(self, name, as_tensor(value, name))
        s = self.sim_i2t
        if s.dim() != 2:
            raise ValueError(f"sim_i2t: expected shape (N x M), got {tuple(s.shape)}")
        n, m = s.shape
        if n == 0 or m == 0:
            raise ValueError(f"sim_i2t: empty matrix of shape {tuple(s.shape)}")
        _check_float(s, "sim_i2t", (n, m))

        object.__setattr__(self, "txt2img", check_txt2img(self.txt2img, n, m))
        if self.sim_i2i is not None:
            _check_float(self.sim_i2i, "sim_i2i", (n, n))
        if self.sim_t2t is not None:
            _check_float(self.sim_t2t, "sim_t2t", (m, m))
        if self.sim_t2i is not None:
            _check_float(self.sim_t2i, "sim_t2i", (m, n))
        if self.img_emb is not None:
            _check_float(self.img_emb, "img_emb", (n, None))
        if self.txt_emb is not None:
            _check_float(self.txt_emb, "txt_emb", (m, None))
        if self.img_emb is not None and self.txt_emb is not None:
            if self.img_emb.shape[1] != self.txt_emb.shape[1]:
                raise ValueError(f"txt_emb: dimension {self.txt_emb.shape[1]} differs from "
                                 f"img_emb's {self.img_emb.shape[1]}")

    # ------------------------------------------------------------------ shape
    @property
    def num_images(self) -> int:
        """Number of images ``N``."""
        return self.sim_i2t.shape[0]

    @property
    def num_texts(self) -> int:
        """Number of captions ``M``."""
        return self.sim_i2t.shape[1]

    @property
    def t2i_scores(self) -> Tensor:
        """:obj:`[M, N]` scores that rank images per caption: :attr:`sim_t2i` when
        stored, else the transpose of :attr:`sim_i2t` (a view)."""
        return self.sim_t2i if self.sim_t2i is not None else self.sim_i2t.T

    @property
    def has_intra(self) -> bool:
        """Whether both intra-modal matrices are present."""
        return self.sim_i2i is not None and self.sim_t2t is not None

    @property
    def device(self) -> torch.device:
        """Device of :attr:`sim_i2t`."""
        return self.sim_i2t.device

    def img2txt(self) -> list[Tensor]:
        """For every image, the indices of its captions."""
        order = torch.argsort(self.txt2img, stable=True)
        counts = torch.bincount(self.txt2img, minlength=self.num_images)
        return list(torch.split(order, counts.tolist()))

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_embeddings(cls, img_emb: ArrayLike, txt_emb: ArrayLike, txt2img: ArrayLike,
                        keep_embeddings: bool = True) -> "SimilarityBundle":
        """Cosine similarities of L2-normalised embeddings, intra matrices included.

        Args:
            img_emb: :obj:`[N, d]` image embeddings.
            txt_emb: :obj:`[M, d]` caption embeddings.
            txt2img: :obj:`[M]` image index of each caption.
            keep_embeddings: also store the embeddings in the bundle (default: True).
        """
        img = as_tensor(img_emb, "img_emb")
        txt = as_tensor(txt_emb, "txt_emb")
        for t, name in ((img, "img_emb"), (txt, "txt_emb")):
            _check_float(t, name, (None, None))
        if img.shape[1] != txt.shape[1]:
            raise ValueError(f"txt_emb: dimension {txt.shape[1]} differs from img_emb's {img.shape[1]}")
        return cls(sim_i2t=_cosine(img, txt), txt2img=txt2img,
                   sim_i2i=_cosine(img, img), sim_t2t=_cosine(txt, txt),
                   img_emb=img if keep_embeddings else None,
                   txt_emb=txt if keep_embeddings else None)

    def with_second_order_intra(self, overwrite: bool = False) -> "SimilarityBundle":
        r"""Fill missing intra-modal matrices from :attr:`sim_i2t` alone.

        For one-tower models (cross-encoders) that produce no embeddings:
        two images are similar when they score the captions alike, so
        ``sim_i2i`` is the cosine between rows of ``sim_i2t`` (each row
        centred first), and ``sim_t2t`` the cosine between its columns.

        .. math::
            S_{ii'} = \cos(\bar{s}_{i,:}, \bar{s}_{i',:}), \qquad
            S_{tt'} = \cos(\bar{s}_{:,t}, \bar{s}_{:,t'})

        Args:
            overwrite: replace intra matrices that are already present
                (default: False, only missing ones are filled).

        Returns:
            A new bundle; this one is left unchanged.
        """
        s = self.sim_i2t
        sim_i2i, sim_t2t = self.sim_i2i, self.sim_t2t
        if sim_i2i is None or overwrite:
            rows = s - s.mean(dim=1, keepdim=True)
            sim_i2i = _cosine(rows, rows)
        if sim_t2t is None or overwrite:
            cols = (s - s.mean(dim=0, keepdim=True)).T
            sim_t2t = _cosine(cols, cols)
        return replace(self, sim_i2i=sim_i2i, sim_t2t=sim_t2t)

    # --------------------------------------------------------------- utilities
    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Optional[torch.dtype] = None) -> "SimilarityBundle":
        """A copy on ``device`` with float fields cast to ``dtype`` (``self`` when nothing changes)."""
        changes = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _FLOAT_FIELDS and dtype is not None:
                value = value.to(device=device, dtype=dtype)
            else:
                value = value.to(device=device)
            changes[name] = value
        if all(changes[k] is getattr(self, k) for k in changes):
            return self  # already there (a frozen bundle): no copy, no re-validation
        return replace(self, **changes)

    def subset(self, images: ArrayLike) -> "SimilarityBundle":
        """The sub-problem of the given images and all their captions.

        Images keep the given order; captions keep their original order and
        ``txt2img`` is re-indexed into the subset.
        """
        images = as_tensor(images, "images").long().to(self.device)
        if images.dim() != 1 or images.numel() == 0:
            raise ValueError("images: expected a non-empty 1-D index")
        if int(images.min()) < 0 or int(images.max()) >= self.num_images:
            raise ValueError(f"images: indices must lie in [0, {self.num_images})")
        new_id = torch.full((self.num_images,), -1, dtype=torch.long, device=self.device)
        new_id[images] = torch.arange(images.numel(), device=self.device)
        texts = (new_id[self.txt2img] >= 0).nonzero().flatten()
        out = dict(sim_i2t=self.sim_i2t[images][:, texts], txt2img=new_id[self.txt2img[texts]])
        if self.sim_i2i is not None:
            out["sim_i2i"] = self.sim_i2i[images][:, images]
        if self.sim_t2t is not None:
            out["sim_t2t"] = self.sim_t2t[texts][:, texts]
        if self.img_emb is not None:
            out["img_emb"] = self.img_emb[images]
        if self.txt_emb is not None:
            out["txt_emb"] = self.txt_emb[texts]
        if self.sim_t2i is not None:
            out["sim_t2i"] = self.sim_t2i[texts][:, images]
        return SimilarityBundle(**out)

    def replace(self, **changes: Any) -> "SimilarityBundle":
        """A validated copy with some fields replaced (e.g. re-ranked ``sim_i2t``)."""
        return replace(self, **changes)

    # --------------------------------------------------------------------- I/O
    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write an uncompressed ``.npz`` whose keys are exactly the present field names.

        The file is written to a temporary file in the same folder and renamed
        into place, so an existing file is never left half-written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
        arrays = {name: getattr(self, name).detach().cpu().numpy()
                  for name in _FIELD_NAMES if getattr(self, name) is not None}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SimilarityBundle":
        """Read a bundle written by :meth:`save` (or any ``.npz`` with the field names as keys).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: unknown keys, a missing required key, or invalid contents.
        """
        arrays = read_npz(path, "bundle", _FIELD_NAMES, required=("sim_i2t", "txt2img"))
        return cls(**{k: torch.from_numpy(v) for k, v in arrays.items()})

    def __repr__(self) -> str:
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        return (f"SimilarityBundle(num_images={self.num_images}, num_texts={self.num_texts}, "
                f"fields={present})")
