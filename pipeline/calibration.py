"""Calibrating the auto-accept threshold on samples whose ground truth is known.

A pseudo-label is accepted without a human only when its uncertainty is below a threshold chosen so
that, on the fixed validation split, at least `min_precision` of the labels below it are good
(OKS >= `good_oks`). A threshold is therefore a measured promise, not a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AcceptThreshold:
    threshold: float  # accept when uncertainty <= threshold; -inf accepts nothing
    good_oks: float
    min_precision: float
    precision: float  # measured precision at the threshold on the calibration samples
    coverage: float  # share of calibration samples that would be accepted
    samples: int

    def accepts(self, uncertainty: float) -> bool:
        return bool(uncertainty <= self.threshold)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def calibrate_threshold(
    uncertainty: Sequence[float],
    oks: Sequence[float],
    *,
    good_oks: float = 0.75,
    min_precision: float = 0.9,
    min_samples: int = 5,
) -> AcceptThreshold:
    """The largest uncertainty threshold whose accepted set still meets `min_precision`.

    Scans thresholds from the most confident sample upwards; among the prefixes with at least
    `min_samples` samples that meet the precision target, takes the longest. With too few samples or
    no qualifying prefix, nothing is auto-accepted (threshold -inf).
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    q = np.asarray(oks, dtype=np.float64)
    if u.shape != q.shape:
        raise ValueError(f"uncertainty and oks differ in length: {u.shape} vs {q.shape}")
    n = len(u)
    best = AcceptThreshold(float("-inf"), good_oks, min_precision, 0.0, 0.0, n)
    if n < min_samples:
        return best
    order = np.argsort(u, kind="stable")
    good = (q[order] >= good_oks).astype(np.float64)
    precision = np.cumsum(good) / np.arange(1, n + 1)
    sorted_u = u[order]
    for k in range(n - 1, min_samples - 2, -1):  # longest qualifying prefix wins
        # a threshold must not split tied uncertainties
        if k + 1 < n and sorted_u[k + 1] == sorted_u[k]:
            continue
        if precision[k] >= min_precision:
            return AcceptThreshold(float(sorted_u[k]), good_oks, min_precision, float(precision[k]),
                                   (k + 1) / n, n)
    return best
