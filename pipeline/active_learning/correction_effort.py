"""Correction effort: how many keypoints an annotator had to touch, and how many they will have to.

What an annotator feels is not "one task" but the points they drag, add or delete. A task whose
pre-annotation was right costs a glance; one whose spine was folded costs nine drags. So:

- **Measured effort** (`moved_keypoints`, `round_effort`): compare a task's pre-annotation (the
  revision pushed with it, `AnnotationTask.prediction_revision_id`) with the label the annotator
  submitted. A point counts when it is labelled in the final label and (a) was not pre-annotated
  (the annotator had to place it), or (b) was pre-annotated farther than the threshold from where
  the annotator left it; and, with `count_deletions`, when it was pre-annotated but the annotator
  removed it. The threshold is OKS-scaled by default (a point counts as moved when the OKS term
  between pre-annotation and final label falls below `min_oks_term`, so big people tolerate bigger
  pixel offsets, exactly like the metric), or a fixed pixel distance. Click noise of the simulated
  annotator (1.5 px) stays far below either threshold.
- **Expected effort** (`EffortModel`, `expected_effort`): before a task exists, the expected number
  of points to move is the sum over keypoints of P(moved | the model's per-keypoint uncertainty, and
  for the spine its implausibility under the pose prior). P is fitted by isotonic regression on the
  corrections of earlier rounds (the store's own history, so it calibrates to this data); without
  history it is the uncertainty itself. A completion's points a person placed (an imported COCO
  person's body) are never to correct: they are left out of both the estimate and its calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from schemas.enums import RevisionSource
from schemas.keypoints import BODY_IDS, FEET_IDS, NUM_KEYPOINTS, SIGMAS, SPINE_IDS

if TYPE_CHECKING:
    from pipeline.store import Store
    from pipeline.store.models import Revision

Array = NDArray[np.float64]

#: Keypoint groups that get their own calibration (the spine behaves unlike limbs).
GROUPS: dict[str, tuple[int, ...]] = {
    "body": BODY_IDS,
    "feet": FEET_IDS,
    "spine": SPINE_IDS,
    "other": tuple(k for k in range(NUM_KEYPOINTS) if k not in (*BODY_IDS, *FEET_IDS, *SPINE_IDS)),
}
_GROUP_OF = np.empty(NUM_KEYPOINTS, dtype=object)
for _name, _ids in GROUPS.items():
    _GROUP_OF[list(_ids)] = _name


@dataclass(frozen=True)
class EffortRule:
    """When a keypoint counts as corrected."""

    min_oks_term: float = 0.8  # moved when exp(-d^2 / (2 area (2 sigma)^2)) drops below this
    threshold_px: float | None = None  # if set: moved when farther than this many pixels instead
    count_deletions: bool = True  # a pre-annotated point the annotator removed counts too

    def as_dict(self) -> dict[str, Any]:
        return {"min_oks_term": self.min_oks_term, "threshold_px": self.threshold_px,
                "count_deletions": self.count_deletions}


def _points(keypoints: ArrayLike) -> Array:
    arr = np.asarray(keypoints, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 3)
    if arr.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"expected {NUM_KEYPOINTS} (x, y, v) keypoints, got shape {arr.shape}")
    return arr


def moved_keypoints(pre: ArrayLike, final: ArrayLike, *, area: float,
                    rule: EffortRule | None = None) -> NDArray[np.bool_]:
    """(37,) which keypoints the annotator had to place, drag or delete (see module docstring)."""
    rule = rule or EffortRule()
    p, f = _points(pre), _points(final)
    pre_on, final_on = p[:, 2] > 0, f[:, 2] > 0
    d = np.linalg.norm(p[:, :2] - f[:, :2], axis=1)
    if rule.threshold_px is not None:
        far = d > rule.threshold_px
    else:
        k2 = (2.0 * np.asarray(SIGMAS)) ** 2
        term = np.exp(-(d**2) / (2.0 * max(float(area), 1e-12) * k2))
        far = term < rule.min_oks_term
    moved = final_on & (~pre_on | far)
    if rule.count_deletions:
        moved |= pre_on & ~final_on
    return np.asarray(moved, dtype=bool)


def correction_effort(pre: ArrayLike, final: ArrayLike, *, area: float,
                      rule: EffortRule | None = None) -> int:
    """How many keypoints the annotator had to touch."""
    return int(moved_keypoints(pre, final, area=area, rule=rule).sum())


# -- expected effort ----------------------------------------------------------------------------------
def isotonic(x: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
    """Non-decreasing least-squares fit of y on x (pool adjacent violators over the distinct x, each
    weighted by its count); returns the distinct x and the fitted value at each, for `np.interp`."""
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    distinct, inverse, counts = np.unique(xs, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=ys) / counts
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, w in zip(means, counts, strict=True):
        values.append(float(v))
        weights.append(float(w))
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            total = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / total
            weights[-2] = total
            sizes[-2] += sizes[-1]
            del values[-1], weights[-1], sizes[-1]
    return distinct, np.repeat(values, sizes).astype(np.float64)


def keypoint_signal(keypoint_uncertainty: ArrayLike, plausibility: ArrayLike | None = None) -> Array:
    """Per-keypoint evidence that a point is wrong: the uncertainty, averaged with the pose prior's
    per-keypoint implausibility where the prior scores the point."""
    u = np.clip(np.asarray(keypoint_uncertainty, dtype=np.float64).reshape(NUM_KEYPOINTS), 0.0, 1.0)
    if plausibility is None:
        return u
    p = np.clip(np.asarray(plausibility, dtype=np.float64).reshape(NUM_KEYPOINTS), 0.0, 1.0)
    return np.where(p > 0, 0.5 * (u + p), u)


@dataclass(frozen=True)
class EffortModel:
    """P(a keypoint gets corrected | its signal), one monotone curve per keypoint group."""

    curves: dict[str, tuple[list[float], list[float]]]  # group -> (signal knots, probability)
    samples: int

    @classmethod
    def uncalibrated(cls) -> EffortModel:
        """Without history: the signal is taken as the probability."""
        return cls({g: ([0.0, 1.0], [0.0, 1.0]) for g in GROUPS}, 0)

    @classmethod
    def fit(cls, signals: ArrayLike, moved: ArrayLike, *, min_per_group: int = 20) -> EffortModel:
        """Fit from (instances, 37) signals and moved flags; a group with fewer than `min_per_group`
        samples keeps the uncalibrated identity."""
        s = np.asarray(signals, dtype=np.float64).reshape(-1, NUM_KEYPOINTS)
        m = np.asarray(moved, dtype=np.float64).reshape(-1, NUM_KEYPOINTS)
        curves = dict(cls.uncalibrated().curves)
        for group, ids in GROUPS.items():
            x, y = s[:, list(ids)].ravel(), m[:, list(ids)].ravel()
            x, y = x[np.isfinite(x)], y[np.isfinite(x)]  # NaN: a person's point, never to correct
            if len(x) >= min_per_group:
                knots, probs = isotonic(x, y)
                curves[group] = (knots.tolist(), probs.tolist())
        return cls(curves, len(s))

    def probabilities(self, signal: ArrayLike) -> Array:
        s = np.asarray(signal, dtype=np.float64).reshape(NUM_KEYPOINTS)
        out = np.empty(NUM_KEYPOINTS)
        for group, ids in GROUPS.items():
            knots, probs = self.curves[group]
            out[list(ids)] = np.interp(s[list(ids)], knots, probs)
        return out

    def expected(self, signal: ArrayLike, given: Sequence[int] = ()) -> float:
        """Expected number of keypoints to correct; `given` points (a person's) are not to correct."""
        probabilities = self.probabilities(signal)
        probabilities[list(given)] = 0.0
        return float(probabilities.sum())


def expected_effort(keypoint_uncertainty: ArrayLike, plausibility: ArrayLike | None = None,
                    model: EffortModel | None = None, given: Sequence[int] = ()) -> float:
    """Expected keypoints to correct, the points a person placed (`given`) left out."""
    signal = keypoint_signal(keypoint_uncertainty, plausibility)
    return (model or EffortModel.uncalibrated()).expected(signal, given)


# -- the store side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrectedTask:
    """One finished task: what was pre-annotated, what the annotator submitted."""

    instance_id: int
    round: int
    pre: list[float]
    final: list[float]
    area: float
    bbox: list[float]  # the pre-annotation's person box
    pre_quality: dict[str, Any]


def corrected_tasks(store: Store, rounds: Sequence[int] | None = None) -> list[CorrectedTask]:
    """Tasks (of `rounds`, default all) with a pre-annotation and a human label of the same round."""
    wanted = None if rounds is None else set(rounds)
    tasks = [t for t in store.tasks() if t.prediction_revision_id is not None
             and (wanted is None or t.round in wanted)]  # by id
    if not tasks:
        return []
    pres = store.revisions_by_id(rid for t in tasks if (rid := t.prediction_revision_id) is not None)
    finals: dict[tuple[int, int], Revision] = {}
    for rev in store.revisions_for([t.instance_id for t in tasks], sources=[RevisionSource.HUMAN],
                                   accepted=True):  # by id
        if rev.round is not None:
            finals[(rev.instance_id, rev.round)] = rev  # the latest version wins
    out = []
    for t in tasks:
        pre, fin = pres.get(t.prediction_revision_id or -1), finals.get((t.instance_id, t.round))
        if pre is None or fin is None:
            continue
        area = float(fin.area or (fin.bbox[2] * fin.bbox[3]))
        out.append(CorrectedTask(t.instance_id, t.round, list(pre.keypoints), list(fin.keypoints), area,
                                 list(pre.bbox), dict(pre.quality or {})))
    return out


@dataclass(frozen=True)
class RoundEffort:
    tasks: int
    moved: int  # keypoints corrected in total (placed, dragged, and deleted if the rule counts them)
    per_task: float  # mean keypoints corrected per task (nan without tasks)
    by_group: dict[str, int]
    deleted: int = 0  # of `moved`: pre-annotated points the annotator removed

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "moved_keypoints": self.moved, "per_task": self.per_task,
                "by_group": dict(self.by_group), "deleted": self.deleted}


def round_effort(store: Any, number: int, rule: EffortRule | None = None) -> RoundEffort:
    """Measured correction effort of one round's finished tasks.

    `deleted` is reported apart because where the truth is a partial file (COCO-17 photos carry no
    spine), a simulated annotator "deletes" every point the file does not cover: a real annotator
    would have placed those instead, so with such truth `moved - deleted` is the comparable count.
    """
    rule = rule or EffortRule()
    tasks = corrected_tasks(store, [number])
    moved = [moved_keypoints(t.pre, t.final, area=t.area, rule=rule) for t in tasks]
    deleted = sum(int(((_points(t.pre)[:, 2] > 0) & (_points(t.final)[:, 2] <= 0)).sum()) for t in tasks) \
        if rule.count_deletions else 0
    total = int(sum(int(m.sum()) for m in moved))
    by_group = {g: int(sum(int(m[list(ids)].sum()) for m in moved)) for g, ids in GROUPS.items()}
    return RoundEffort(len(moved), total, total / len(moved) if moved else math.nan, by_group, deleted)


def _stored_signal(quality: dict[str, Any], plausibility: ArrayLike | None) -> Array | None:
    per_kp = (quality.get("uncertainty_parts") or {}).get("per_keypoint")
    if per_kp is None or len(per_kp) != NUM_KEYPOINTS:
        return None
    return keypoint_signal(per_kp, plausibility)


def fit_effort_model(store: Any, prior: Any = None, rule: EffortRule | None = None) -> EffortModel:
    """Calibrate P(moved | signal) on every corrected task in the store (uncalibrated without any)."""
    signals, moved = [], []
    for t in corrected_tasks(store):
        plaus = prior.score(t.pre, t.bbox).per_keypoint if prior is not None else None
        sig = _stored_signal(t.pre_quality, plaus)
        if sig is None:
            continue
        sig[list(t.pre_quality.get("human_points", ()))] = np.nan  # only what the model placed
        signals.append(sig)
        moved.append(moved_keypoints(t.pre, t.final, area=t.area, rule=rule))
    if not signals:
        return EffortModel.uncalibrated()
    return EffortModel.fit(np.stack(signals), np.stack(moved))


def with_estimates(store: Any, cands: Sequence[Any]) -> list[Any]:
    """Selection candidates with the pose prior's implausibility and the expected correction effort
    filled in (pipeline.active_learning.selection.Candidate; unchanged where a candidate has no keypoints)."""
    from pipeline.active_learning.plausibility import fit_store_prior

    prior = fit_store_prior(store)
    model = fit_effort_model(store, prior)
    out = []
    for c in cands:
        if c.keypoints is None or c.bbox is None:
            out.append(c)
            continue
        plaus = prior.score(c.keypoints, c.bbox) if prior is not None else None
        effort = expected_effort(c.keypoint_uncertainty, plaus.per_keypoint if plaus else None, model,
                                 getattr(c, "given", ()))
        out.append(replace(c, implausibility=plaus.nll if plaus else None, expected_effort=effort))
    return out
