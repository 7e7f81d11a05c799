r"""Synthetic image-text retrieval problems with known ground truth.

Real backbones cannot run offline, so pillargraph ships a generator of
retrieval problems that behave like theirs: a shared latent *world* of
topics, scenes and image-specific meanings; noisy captions of every image;
two different cross-modal encoders (one per modality) with a modality gap,
per-item encoding errors and hub items; and per-modality *unimodal* encoders
that see details the joint space cannot align, which is what gives a
re-ranker something to learn.

The generative story, for one image :math:`i` with topic :math:`k`, scene
:math:`c` and captions :math:`j`:

.. math::
    x_i &= \operatorname{norm}\big(\sqrt{w_t}\,\tau_k + \sqrt{w_s}\,\sigma_c
           + \sqrt{w_d}\,\delta_i\big) \\
    y_j &= \operatorname{norm}\big(x_i + \nu_j \epsilon_j\big) \\
    e^{img}_i &= \operatorname{norm}\big(\operatorname{norm}(A_{img} x_i + \eta_i \xi_i)
                 + g\,o_{img} + h_i\,o_{txt}\big) \\
    e^{txt}_j &= \operatorname{norm}\big(\operatorname{norm}(A_{txt} y_j + \eta_j \xi_j)
                 + g\,o_{txt} + h_j\,o_{img}\big) \\
    u^{img}_i &= \operatorname{norm}(B_{img} x_i + \mu_i \zeta_i), \qquad
    u^{txt}_j = \operatorname{norm}(B_{txt} y_j + \mu_j \zeta_j)

where :math:`\tau, \sigma, \delta, \epsilon, \xi, \zeta` are Gaussian
directions, :math:`\nu, \eta, \mu` per-item noise levels (log-normally
spread), :math:`A_{img} = P + m R_{img}` and :math:`A_{txt} = P + m R_{txt}`
share a low-rank alignable part :math:`P` (rank
:attr:`SyntheticConfig.joint_rank`), :math:`o_{img}, o_{txt}` are the
modality offsets (the gap), :math:`h` is non-zero for hub items only, and
:math:`B` are full-rank unimodal encoders. Cross-modal scores are
:math:`s(i, j) = \langle e^{img}_i, e^{txt}_j \rangle`; intra-modal scores mix
the two kinds of embedding with the complementarity :math:`c`:

.. math::
    s(i, i') = (1 - c)\,\langle e^{img}_i, e^{img}_{i'} \rangle
               + c\,\langle u^{img}_i, u^{img}_{i'} \rangle

(and likewise for captions), so at :math:`c = 0` the intra-modal matrices say
nothing that the cross-modal embeddings do not.

Everything is drawn from ``numpy`` generators seeded by ``seed``: the world
from one stream, each split from its own, so a split does not change when
another split's size does. Splits are disjoint images of the same world.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..bundle import SimilarityBundle

__all__ = ["SyntheticConfig", "SyntheticWorld", "SyntheticSplit", "synthetic_embeddings",
           "synthetic_splits", "SPLIT_NAMES"]

#: Names of the standard splits; each draws from its own random stream.
SPLIT_NAMES = ("train", "dev", "test")


@dataclass(frozen=True)
class SyntheticConfig:
    r"""The knobs of the synthetic world (all have realistic defaults).

    At the defaults, cosine retrieval on 1000 test images with 5 captions each
    scores in the range of real backbones (image-to-text R@1 about 60-85,
    text-to-image R@1 about 40-65), and the intra-modal similarities carry
    neighbourhood information that the cross-modal score lacks.

    Args:
        latent_dim (int): dimension of the latent meaning space that images
            and captions describe (default: :obj:`128`).
        num_topics (int): number of topics (coarse clusters such as
            "sports" or "kitchens") (default: :obj:`40`).
        scenes_per_topic (int): scenes (fine clusters of near-duplicate
            content, e.g. "tennis player serving") inside each topic; images of
            one scene look alike and their captions are interchangeable up to
            image-specific detail (default: :obj:`25`).
        topic_imbalance (float): Zipf exponent of topic popularity; :obj:`0`
            makes all topics equally frequent, larger values concentrate images
            in a few topics, which makes those neighbourhoods crowded and hard
            (default: :obj:`1.0`).
        topic_weight (float): share of an image's meaning that comes from its
            topic (default: :obj:`0.3`).
        scene_weight (float): share that comes from its scene (default: :obj:`0.3`).
        detail_weight (float): share that is specific to the image, the part
            that tells it apart from its scene mates. The three weights are
            relative; they need not sum to one (default: :obj:`0.4`).
        caption_noise (float): typical size of a caption's deviation from its
            image's meaning, relative to the unit-norm meaning; larger values
            give vaguer captions whose siblings agree less (default: :obj:`0.6`).
        caption_noise_spread (float): log-normal sigma of the per-caption
            noise level, so some captions are precise and some vague
            (default: :obj:`0.4`).
        joint_dim (int): dimension of the cross-modal embeddings
            (default: :obj:`64`).
        joint_rank (int): number of latent directions the two cross-modal
            encoders can align (the rank of their shared map); detail outside
            them is invisible to the cross-modal score. At most
            ``min(latent_dim, joint_dim)`` (default: :obj:`24`).
        encoder_misalignment (float): size of each modality's private random
            map relative to the shared one; the two encoders are different
            linear maps that disagree more as this grows (default: :obj:`0.35`).
        encoder_noise (float): typical per-item error of the cross-modal
            encoders, relative to the unit-norm signal (default: :obj:`0.45`).
        encoder_noise_spread (float): log-normal sigma of the per-item
            cross-modal error, so that some items are encoded badly while the
            unimodal encoders still place them well (default: :obj:`0.5`).
        modality_gap (float): norm of the per-modality offset added to the
            unit-norm cross-modal embeddings; images and captions then live in
            two separated cones, as in CLIP-like models (default: :obj:`0.5`).
        hub_fraction (float): fraction of items in each modality that are
            hubs (default: :obj:`0.02`).
        hub_strength (float): how far a hub is pulled towards the centre of
            the *other* modality's cone, which makes it score high against many
            queries (default: :obj:`0.5`).
        unimodal_dim (int): dimension of the unimodal (intra-modal)
            embeddings (default: :obj:`64`).
        unimodal_noise (float): typical per-item error of the unimodal
            encoders; they see all latent directions and err independently of
            the cross-modal encoders (default: :obj:`0.3`).
        unimodal_noise_spread (float): log-normal sigma of the per-item
            unimodal error (default: :obj:`0.3`).
        complementarity (float): in :math:`[0, 1]`, the weight :math:`c` of
            the unimodal embeddings in the intra-modal similarities,
            :math:`s_{intra} = (1 - c) \cos_{joint} + c \cos_{unimodal}`. At
            :obj:`0` the intra-modal matrices are cosines of the cross-modal
            embeddings and carry no information beyond them, so a re-ranker
            has little to gain; at :obj:`1` they come from the unimodal
            encoders alone (default: :obj:`1.0`).
    """

    latent_dim: int = 128
    num_topics: int = 40
    scenes_per_topic: int = 25
    topic_imbalance: float = 1.0
    topic_weight: float = 0.3
    scene_weight: float = 0.3
    detail_weight: float = 0.4
    caption_noise: float = 0.4
    caption_noise_spread: float = 0.4
    joint_dim: int = 64
    joint_rank: int = 24
    encoder_misalignment: float = 0.35
    encoder_noise: float = 0.5
    encoder_noise_spread: float = 0.6
    modality_gap: float = 0.5
    hub_fraction: float = 0.02
    hub_strength: float = 0.3
    unimodal_dim: int = 64
    unimodal_noise: float = 0.2
    unimodal_noise_spread: float = 0.3
    complementarity: float = 1.0

    def __post_init__(self) -> None:
        for name in ("latent_dim", "num_topics", "scenes_per_topic", "joint_dim", "joint_rank",
                     "unimodal_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.joint_rank > min(self.latent_dim, self.joint_dim):
            raise ValueError(f"joint_rank: must be at most min(latent_dim, joint_dim) = "
                             f"{min(self.latent_dim, self.joint_dim)}, got {self.joint_rank}")
        for name in ("topic_imbalance", "topic_weight", "scene_weight", "detail_weight",
                     "caption_noise", "caption_noise_spread", "encoder_misalignment",
                     "encoder_noise", "encoder_noise_spread", "modality_gap", "hub_strength",
                     "unimodal_noise", "unimodal_noise_spread"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if self.topic_weight + self.scene_weight + self.detail_weight <= 0:
            raise ValueError("topic_weight, scene_weight, detail_weight: at least one must be > 0")
        for name in ("hub_fraction", "complementarity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _gaussian(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard normal float32 draws scaled so that rows have norm about 1."""
    return rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))


def _noise_levels(rng: np.random.Generator, n: int, level: float, spread: float) -> np.ndarray:
    # log-normal with median `level`: most items are typical, a tail is much worse
    return (level * np.exp(spread * rng.standard_normal(n))).astype(np.float32)[:, None]


def _stream(seed: int, split: Union[str, int]) -> np.random.Generator:
    if isinstance(split, str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"split: expected one of {SPLIT_NAMES} or an integer >= 0, got {split!r}")
        index = SPLIT_NAMES.index(split)
    elif isinstance(split, (int, np.integer)) and not isinstance(split, bool) and split >= 0:
        index = int(split)
    else:
        raise ValueError(f"split: expected one of {SPLIT_NAMES} or an integer >= 0, got {split!r}")
    # stream 0 is the world; split k draws from stream k + 1
    return np.random.default_rng([int(seed), index + 1])


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


@dataclass(frozen=True, eq=False)
class SyntheticSplit:
    r"""One synthetic split as embeddings, cheap even for very large galleries.

    Dense score matrices are made on demand by :meth:`to_bundle`; for large
    splits hand the embeddings to a top-k neighbour search instead.

    Args:
        img_emb (Tensor): unit-norm cross-modal image embeddings :obj:`[N, d]`.
        txt_emb (Tensor): unit-norm cross-modal caption embeddings :obj:`[M, d]`.
        img_intra_emb (Tensor): intra-modal image embeddings :obj:`[N, d']`
            whose inner products are exactly ``sim_i2i``.
        txt_intra_emb (Tensor): intra-modal caption embeddings :obj:`[M, d']`
            whose inner products are exactly ``sim_t2t``.
        txt2img (Tensor): :obj:`[M]` image of each caption (caption ``j``
            belongs to image ``j // captions_per_image``).
        img_topic (Tensor): :obj:`[N]` topic of each image (ground truth).
        img_scene (Tensor): :obj:`[N]` global scene id of each image.
        img_hub (Tensor): :obj:`[N]` bool, whether the image is a hub.
        txt_hub (Tensor): :obj:`[M]` bool, whether the caption is a hub.
    """

    img_emb: Tensor
    txt_emb: Tensor
    img_intra_emb: Tensor
    txt_intra_emb: Tensor
    txt2img: Tensor
    img_topic: Tensor
    img_scene: Tensor
    img_hub: Tensor
    txt_hub: Tensor

    @property
    def num_images(self) -> int:
        """Number of images ``N``."""
        return self.img_emb.shape[0]

    @property
    def num_texts(self) -> int:
        """Number of captions ``M``."""
        return self.txt_emb.shape[0]

    def to_bundle(self, device: Union[str, torch.device, None] = None,
                  dtype: torch.dtype = torch.float32,
                  keep_embeddings: bool = True) -> SimilarityBundle:
        """The dense :class:`~pillargraph.SimilarityBundle` of this split.

        Args:
            device: where to compute and keep the matrices (default: CPU).
            dtype: float dtype of the matrices (default: ``torch.float32``).
            keep_embeddings: store the cross-modal embeddings as ``img_emb`` /
                ``txt_emb`` (default: True).

        Returns:
            A bundle with ``sim_i2t``, ``sim_i2i``, ``sim_t2t`` and ``txt2img``.

        Shapes:
            ``sim_i2t`` :obj:`[N, M]`, ``sim_i2i`` :obj:`[N, N]`, ``sim_t2t`` :obj:`[M, M]`.
        """
        def get(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        img, txt = get(self.img_emb), get(self.txt_emb)
        img_in, txt_in = get(self.img_intra_emb), get(self.txt_intra_emb)
        return SimilarityBundle(sim_i2t=img @ txt.T, txt2img=self.txt2img.to(device),
                                sim_i2i=img_in @ img_in.T, sim_t2t=txt_in @ txt_in.T,
                                img_emb=img if keep_embeddings else None,
                                txt_emb=txt if keep_embeddings else None)

    def __repr__(self) -> str:
        return (f"SyntheticSplit(num_images={self.num_images}, num_texts={self.num_texts}, "
                f"dim={self.img_emb.shape[1]}, intra_dim={self.img_intra_emb.shape[1]})")


class SyntheticWorld:
    r"""The shared latent world from which every split of one seed is drawn.

    Holds the topic and scene centres, the two cross-modal encoders (a shared
    low-rank map plus a private map per modality), the modality offsets and
    the two unimodal encoders. :meth:`sample` draws fresh images and captions.

    Args:
        config (SyntheticConfig, optional): the world's parameters
            (default: :class:`SyntheticConfig()`).
        seed (int): seed of the world and of every split drawn from it
            (default: :obj:`0`).
    """

    def __init__(self, config: Optional[SyntheticConfig] = None, seed: int = 0) -> None:
        if config is None:
            config = SyntheticConfig()
        if not isinstance(config, SyntheticConfig):
            raise ValueError(f"config: expected a SyntheticConfig, got {type(config).__name__}")
        self.config = config
        self.seed = _check_seed(seed)
        cfg = config
        rng = np.random.default_rng([self.seed, 0])
        D, d, r, du = cfg.latent_dim, cfg.joint_dim, cfg.joint_rank, cfg.unimodal_dim
        num_scenes = cfg.num_topics * cfg.scenes_per_topic
        self.topic_centres = _normalize(rng.standard_normal((cfg.num_topics, D), dtype=np.float32))
        self.scene_centres = _normalize(rng.standard_normal((num_scenes, D), dtype=np.float32))
        popularity = 1.0 / np.arange(1, cfg.num_topics + 1) ** cfg.topic_imbalance
        self.topic_probs = rng.permutation(popularity / popularity.sum())
        # the alignable part: r orthonormal latent directions mapped into the joint space
        basis = np.linalg.qr(rng.standard_normal((D, D)))[0][:, :r].astype(np.float32)
        shared = rng.standard_normal((d, r), dtype=np.float32) @ basis.T / np.float32(np.sqrt(r))
        private = [rng.standard_normal((d, D), dtype=np.float32) / np.float32(np.sqrt(D))
                   for _ in range(2)]
        self.enc_img = (shared + cfg.encoder_misalignment * private[0]).T.copy()  # [D, d]
        self.enc_txt = (shared + cfg.encoder_misalignment * private[1]).T.copy()
        offsets = _normalize(rng.standard_normal((2, d), dtype=np.float32))
        self.offset_img, self.offset_txt = offsets[0], offsets[1]
        self.uni_img = (rng.standard_normal((D, du), dtype=np.float32) / np.float32(np.sqrt(du)))
        self.uni_txt = (rng.standard_normal((D, du), dtype=np.float32) / np.float32(np.sqrt(du)))

    def __repr__(self) -> str:
        return f"SyntheticWorld(seed={self.seed}, config={self.config})"

    def sample(self, num_images: int, captions_per_image: int = 5,
               split: Union[str, int] = "test") -> SyntheticSplit:
        r"""Draw a split of new images and their captions from this world.

        Args:
            num_images (int): number of images ``N``.
            captions_per_image (int): captions per image; caption ``j``
                describes image ``j // captions_per_image`` (default: :obj:`5`).
            split (str or int): which random stream to draw from: ``'train'``,
                ``'dev'``, ``'test'`` or any integer ``>= 0``. Different streams
                give disjoint images; the same stream always gives the same
                images (default: ``'test'``).

        Returns:
            The split's embeddings and ground truth.
        """
        for name, value in (("num_images", num_images), ("captions_per_image", captions_per_image)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        cfg = self.config
        rng = _stream(self.seed, split)
        n, m = int(num_images), int(num_images) * int(captions_per_image)
        D = cfg.latent_dim

        # latent meanings: topic + scene + image-specific detail
        topic = rng.choice(cfg.num_topics, size=n, p=self.topic_probs)
        scene = topic * cfg.scenes_per_topic + rng.integers(0, cfg.scenes_per_topic, size=n)
        total = cfg.topic_weight + cfg.scene_weight + cfg.detail_weight
        w = [np.float32(np.sqrt(v / total))
             for v in (cfg.topic_weight, cfg.scene_weight, cfg.detail_weight)]
        x = _normalize(w[0] * self.topic_centres[topic] + w[1] * self.scene_centres[scene]
                       + w[2] * _normalize(rng.standard_normal((n, D), dtype=np.float32)))
        txt2img = np.repeat(np.arange(n), captions_per_image)
        y = _normalize(x[txt2img] + _noise_levels(rng, m, cfg.caption_noise, cfg.caption_noise_spread)
                       * _gaussian(rng, m, D))

        # cross-modal encoders: different maps, per-item errors, modality gap, hubs
        img_emb = self._joint(rng, x, self.enc_img, self.offset_img, self.offset_txt)
        txt_emb = self._joint(rng, y, self.enc_txt, self.offset_txt, self.offset_img)
        img_emb, img_hub = img_emb
        txt_emb, txt_hub = txt_emb

        # unimodal encoders: full rank, errors independent of the cross-modal ones
        c = np.float32(cfg.complementarity)
        intra = []
        for z, enc, cross in ((x, self.uni_img, img_emb), (y, self.uni_txt, txt_emb)):
            if c == 0:
                intra.append(cross)
                continue
            uni = _normalize(z @ enc + _noise_levels(rng, len(z), cfg.unimodal_noise,
                                                     cfg.unimodal_noise_spread)
                             * _gaussian(rng, len(z), cfg.unimodal_dim))
            # [sqrt(1-c) e, sqrt(c) u] has inner products (1-c) <e,e'> + c <u,u'>
            intra.append(uni if c == 1 else
                         np.concatenate([np.sqrt(1 - c) * cross, np.sqrt(c) * uni], axis=1))

        as_t = torch.from_numpy
        return SyntheticSplit(img_emb=as_t(img_emb), txt_emb=as_t(txt_emb),
                              img_intra_emb=as_t(np.ascontiguousarray(intra[0], dtype=np.float32)),
                              txt_intra_emb=as_t(np.ascontiguousarray(intra[1], dtype=np.float32)),
                              txt2img=as_t(txt2img).long(), img_topic=as_t(topic).long(),
                              img_scene=as_t(scene).long(), img_hub=as_t(img_hub),
                              txt_hub=as_t(txt_hub))

    def _joint(self, rng: np.random.Generator, z: np.ndarray, enc: np.ndarray,
               own_offset: np.ndarray, other_offset: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        k = len(z)
        e = _normalize(_normalize(z @ enc)
                       + _noise_levels(rng, k, cfg.encoder_noise, cfg.encoder_noise_spread)
                       * _gaussian(rng, k, cfg.joint_dim))
        hub = rng.random(k) < cfg.hub_fraction
        e = e + np.float32(cfg.modality_gap) * own_offset \
            + (np.float32(cfg.hub_strength) * hub.astype(np.float32))[:, None] * other_offset
        return _normalize(e).astype(np.float32), hub


def synthetic_embeddings(num_images: int, captions_per_image: int = 5, seed: int = 0,
                         split: Union[str, int] = "test",
                         config: Optional[SyntheticConfig] = None) -> SyntheticSplit:
    """One split as embeddings, for galleries too large for dense matrices.

    Shorthand for ``SyntheticWorld(config, seed).sample(num_images,
    captions_per_image, split)``; the split equals the one of the same name in
    :func:`synthetic_splits` with the same seed, size and config.

    Args:
        num_images (int): number of images.
        captions_per_image (int): captions per image (default: :obj:`5`).
        seed (int): seed of the world (default: :obj:`0`).
        split (str or int): ``'train'``, ``'dev'``, ``'test'`` or a stream
            number (default: ``'test'``).
        config (SyntheticConfig, optional): world parameters.

    Returns:
        A :class:`SyntheticSplit`.
    """
    return SyntheticWorld(config, seed).sample(num_images, captions_per_image, split)


def synthetic_splits(num_train_images: int, num_dev_images: int, num_test_images: int,
                     captions_per_image: int = 5, seed: int = 0,
                     config: Optional[SyntheticConfig] = None,
                     device: Union[str, torch.device, None] = None,
                     ) -> Tuple[SimilarityBundle, SimilarityBundle, SimilarityBundle]:
    """Train, dev and test bundles of disjoint images from one synthetic world.

    Args:
        num_train_images (int): images in the train split.
        num_dev_images (int): images in the dev split.
        num_test_images (int): images in the test split.
        captions_per_image (int): captions per image (default: :obj:`5`).
        seed (int): seed; the same seed gives identical bundles (default: :obj:`0`).
        config (SyntheticConfig, optional): world parameters
            (default: :class:`SyntheticConfig()`).
        device: where to build the dense matrices (default: CPU).

    Returns:
        ``(train, dev, test)`` :class:`~pillargraph.SimilarityBundle` objects
        with ``sim_i2t``, ``sim_i2i``, ``sim_t2t``, ``img_emb`` and ``txt_emb``.

    Example:
        >>> train, dev, test = synthetic_splits(2000, 500, 1000, seed=0)
        >>> test.num_images, test.num_texts
        (1000, 5000)
    """
    world = SyntheticWorld(config, seed)
    return tuple(world.sample(num, captions_per_image, name).to_bundle(device=device)
                 for num, name in zip((num_train_images, num_dev_images, num_test_images),
                                      SPLIT_NAMES))
