"""Modalities and retrieval directions, shared by every stage of the pipeline."""
from __future__ import annotations

__all__ = ["IMAGE", "TEXT", "NODE_TYPES", "DIRECTIONS", "check_direction", "query_modality",
           "gallery_modality", "kind_between"]

#: Node type ids (positions in :data:`NODE_TYPES`).
IMAGE, TEXT = 0, 1
#: Node type names, indexed by id (the :class:`~torch_geometric.data.HeteroData` node types).
NODE_TYPES = ("image", "text")
#: The two retrieval directions: image queries against captions, caption queries against images.
DIRECTIONS = ("i2t", "t2i")

_LETTER = {IMAGE: "i", TEXT: "t"}


def check_direction(direction: str) -> str:
    """Return ``direction`` or raise :class:`ValueError` listing the valid ones."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    return direction


def query_modality(direction: str) -> int:
    """Node type of the queries of ``direction`` (``IMAGE`` for ``'i2t'``)."""
    return IMAGE if check_direction(direction) == "i2t" else TEXT


def gallery_modality(direction: str) -> int:
    """Node type of the gallery (the candidates) of ``direction``."""
    return TEXT if check_direction(direction) == "i2t" else IMAGE


def kind_between(row_type: int, col_type: int) -> str:
    """Similarity kind with rows of ``row_type`` and columns of ``col_type`` (e.g. ``'t2i'``)."""
    return f"{_LETTER[row_type]}2{_LETTER[col_type]}"
