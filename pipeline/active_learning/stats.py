"""Savings of an active-learning strategy over random, with an interval that says how sure we are.

The question a user asks: "how many fewer corrections does this strategy need to get as good as
random?". Answered per seed and then over seeds:

1. target: random's final metric (mean over random's seeds, after its whole budget `N`);
2. per seed, for the strategy AND for random itself: the annotations at which that seed's curve
   first reaches the target, linear between measured rounds (`annotations_to_reach`). A seed that
   never reaches it within the budget is *censored* and counted at `N` (it needed at least that);
3. saving = 1 - mean(strategy needed) / mean(random needed). Random goes through the same rule so
   that the noise of single seeds cancels: a random seed above the mean target reaches it before
   `N`, one below is censored at `N`, and a strategy no better than random gets the same mix. Against
   `N` itself instead, a strategy identical to random would show a positive "saving". Censoring
   treats both sides alike (it shortens both), and `censored` counts the strategy's censored seeds;
4. a 95 % percentile bootstrap over seeds: resample seed indices with replacement (paired: the same
   indices for random and strategy when both ran the same seeds, which share training seeds), redo
   1-3 on each resample.

A saving is supported when the interval's lower end is above 0. `final_difference` is the
equal-budget view (strategy's final metric minus random's, same bootstrap) used to pick a default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Curve = tuple[Sequence[float], Sequence[float]]  # (cumulative annotations, metric) per round


def annotations_to_reach(xs: ArrayLike, ys: ArrayLike, target: float) -> float:
    """First annotation count at which the curve reaches `target` (linear between points); NaN if never.

    A curve that starts at or above the target needs its first x.
    """
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"curve needs matching, non-empty xs and ys, got {x.shape} and {y.shape}")
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            rise = y[i] - y[i - 1]
            frac = (target - y[i - 1]) / rise if rise > 0 else 1.0
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return math.nan


@dataclass(frozen=True)
class Savings:
    """Annotations saved against random to reach random's final metric."""

    target: float  # random's final metric (mean over its seeds)
    budget: float  # random's annotations at the end (mean over its seeds)
    needed: float  # mean annotations the strategy needed (censored seeds at the budget)
    random_needed: float  # the same for random's own seeds (the budget when every seed ends lowest)
    saved_fraction: float  # 1 - needed / random_needed
    ci_low: float  # 95 % bootstrap interval of saved_fraction
    ci_high: float
    per_seed_needed: list[float]  # NaN = never reached (censored)
    censored: int
    seeds: int
    paired: bool
    resamples: int

    @property
    def supported(self) -> bool:
        """The interval excludes zero on the saving side."""
        return self.ci_low > 0

    @property
    def note(self) -> str:
        if self.random_needed <= 0:
            return ("random's final value is no better than where the curves start: nothing to save "
                    "(the metric did not improve with annotations)")
        if self.censored:
            return (f"{self.censored} of {self.seeds} strategy seeds never reached the target and count "
                    "at the full budget")
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "supported": self.supported, "note": self.note,
                "per_seed_needed": [None if math.isnan(v) else v for v in self.per_seed_needed]}


def _finals(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([float(c[0][-1]) for c in curves]), np.array([float(c[1][-1]) for c in curves]))


def _needed(curves: Sequence[Curve], target: float, budget: float) -> tuple[float, list[float]]:
    """Mean annotations to reach `target` (censored at `budget`) and the raw per-seed values."""
    raw = [annotations_to_reach(c[0], c[1], target) for c in curves]
    return float(np.mean([budget if math.isnan(n) else min(n, budget) for n in raw])), raw


def _saved(random: Sequence[Curve], strategy: Sequence[Curve], target: float,
           budget: float) -> tuple[float, float, float, list[float]]:
    ours, raw = _needed(strategy, target, budget)
    theirs, _ = _needed(random, target, budget)
    return (1.0 - ours / theirs if theirs > 0 else 0.0), ours, theirs, raw


def savings(random: Sequence[Curve], strategy: Sequence[Curve], *, paired: bool | None = None,
            resamples: int = 5000, seed: int = 0, level: float = 0.95) -> Savings:
    """Savings of `strategy` over `random` (one curve per seed each; see module docstring).

    `paired` defaults to True when both have the same number of seeds (curves in seed order).
    """
    if not random or not strategy:
        raise ValueError("savings needs at least one random and one strategy curve")
    paired = len(random) == len(strategy) if paired is None else paired
    if paired and len(random) != len(strategy):
        raise ValueError(f"paired savings need equal seeds, got {len(random)} and {len(strategy)}")
    budgets, finals = _finals(random)
    target, budget = float(finals.mean()), float(budgets.mean())
    point, ours, theirs, raw = _saved(random, strategy, target, budget)
    rng = np.random.default_rng(seed)
    boots = np.empty(resamples)
    for b in range(resamples):
        ri = rng.integers(len(random), size=len(random))
        si = ri if paired else rng.integers(len(strategy), size=len(strategy))
        boots[b] = _saved([random[i] for i in ri], [strategy[i] for i in si], float(finals[ri].mean()),
                          float(budgets[ri].mean()))[0]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return Savings(target, budget, ours, theirs, point, float(low), float(high), raw,
                   sum(1 for n in raw if math.isnan(n)), len(strategy), paired, resamples)


@dataclass(frozen=True)
class Difference:
    """Strategy's final metric minus random's at the same budget, with a 95 % bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float
    seeds: int
    paired: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def final_difference(random: Sequence[float], strategy: Sequence[float], *, paired: bool | None = None,
                     resamples: int = 5000, seed: int = 0, level: float = 0.95) -> Difference:
    """Mean(strategy) - mean(random) of final metrics per seed, bootstrapped over seeds."""
    r, s = np.asarray(random, dtype=np.float64), np.asarray(strategy, dtype=np.float64)
    paired = len(r) == len(s) if paired is None else paired
    if paired and len(r) != len(s):
        raise ValueError(f"a paired difference needs equal seeds, got {len(r)} and {len(s)}")
    rng = np.random.default_rng(seed)
    ri = rng.integers(len(r), size=(resamples, len(r)))
    si = ri if paired else rng.integers(len(s), size=(resamples, len(s)))
    boots = s[si].mean(axis=1) - r[ri].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return Difference(float(s.mean() - r.mean()), float(low), float(high), len(s), paired)
