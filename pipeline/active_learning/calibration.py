"""Calibrating the auto-accept threshold on real validation instances whose ground truth is known.

A pseudo-label is accepted without a human only when its uncertainty is below a threshold chosen so
that, on the real validation split, a lower confidence bound (Wilson score interval) of the share
of good labels (OKS >= `good_oks`) below it is at least `min_precision`. With few real validation
instances the bound is loose and nothing is accepted: a threshold is a measured promise, not a
guess, and `reason` says why auto-accept stays off when it does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: One-sided 95 % normal quantile: the bound the promise is stated at.
DEFAULT_Z = 1.645


def wilson_lower_bound(good: float, n: int, z: float = DEFAULT_Z) -> float:
    """Lower end of the Wilson score interval for a proportion of `good` successes in `n` trials."""
    if n <= 0:
        return 0.0
    p = good / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


@dataclass(frozen=True)
class AcceptThreshold:
    threshold: float  # accept when uncertainty <= threshold; -inf accepts nothing
    good_oks: float
    min_precision: float
    precision: float  # measured precision at the threshold on the calibration samples
    coverage: float  # share of calibration samples that would be accepted
    samples: int
    precision_lower: float = 0.0  # Wilson lower bound of `precision`
    reason: str = ""  # why nothing is accepted ("" when something is)

    def accepts(self, uncertainty: float) -> bool:
        return bool(uncertainty <= self.threshold)

    @property
    def enabled(self) -> bool:
        return math.isfinite(self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, str) else float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> AcceptThreshold:
        fields = cls.__dataclass_fields__
        kw = {k: v for k, v in value.items() if k in fields}
        kw["samples"] = int(kw.get("samples", 0))
        return cls(**kw)


def calibrate_threshold(
    uncertainty: Sequence[float],
    oks: Sequence[float],
    *,
    good_oks: float = 0.75,
    min_precision: float = 0.9,
    min_samples: int = 30,
    z: float = DEFAULT_Z,
) -> AcceptThreshold:
    """The largest uncertainty threshold whose accepted set has a Wilson lower bound >= `min_precision`.

    Scans thresholds from the most confident sample upwards and takes the longest qualifying prefix.
    With fewer than `min_samples` calibration samples, or no qualifying prefix, nothing is
    auto-accepted (threshold -inf) and `reason` says which.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    q = np.asarray(oks, dtype=np.float64)
    if u.shape != q.shape:
        raise ValueError(f"uncertainty and oks differ in length: {u.shape} vs {q.shape}")
    n = len(u)
    if n < min_samples:
        return AcceptThreshold(float("-inf"), good_oks, min_precision, 0.0, 0.0, n, 0.0,
                               f"only {n} real validation instances with ground truth (needs {min_samples})")
    order = np.argsort(u, kind="stable")
    good = (q[order] >= good_oks).astype(np.float64)
    hits = np.cumsum(good)
    sorted_u = u[order]
    best_lower = 0.0
    for k in range(n - 1, -1, -1):  # longest qualifying prefix wins
        if k + 1 < n and sorted_u[k + 1] == sorted_u[k]:
            continue  # a threshold must not split tied uncertainties
        lower = wilson_lower_bound(float(hits[k]), k + 1, z)
        best_lower = max(best_lower, lower)
        if lower >= min_precision:
            return AcceptThreshold(float(sorted_u[k]), good_oks, min_precision, float(hits[k] / (k + 1)),
                                   (k + 1) / n, n, lower)
    return AcceptThreshold(
        float("-inf"), good_oks, min_precision, 0.0, 0.0, n, best_lower,
        f"no threshold reaches precision {min_precision:.2f} at the lower confidence bound "
        f"(best {best_lower:.2f} on {n} real validation instances)",
    )
