"""Multi-positive retrieval metrics (R@K with any positive, R-Precision, mAP@R), re-exported.

They live in :mod:`pillargraph.metrics`, beside the rank counts they share with R@K (see that
module's docstring for the definitions); this module re-exports them for code that imports them
from here. The dependency runs one way: this module imports :mod:`pillargraph.metrics`, never the
reverse.
"""
from __future__ import annotations

from .metrics import (MULTI_POSITIVE_KEYS, POSITIVES_NPZ_KEYS, Positives, RelevanceLike, ScoresLike,
                      evaluate_positives, positive_ranks)

__all__ = ["Positives", "evaluate_positives", "positive_ranks", "MULTI_POSITIVE_KEYS",
           "POSITIVES_NPZ_KEYS"]
