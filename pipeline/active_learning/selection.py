"""Which uncertain pseudo-labels go to annotators: pluggable selection strategies.

Every strategy sees the same candidates (one per unlabelled instance, with the model's uncertainty,
per-keypoint uncertainty and an embedding; where the round computed them also the pose prior's
implausibility, pipeline/active_learning/plausibility.py, and the expected correction effort,
pipeline/active_learning/correction_effort.py) and returns at most `budget` instance ids, most useful first.
`random` is the baseline every other strategy is measured against (bench/active_learning.py).

Frames of one video are not independent: whatever the strategy, `select` first keeps, of the
near-duplicates of one frame group (the same place in frames less than NEAR_SECONDS apart), only the
most uncertain one (`thin_near_duplicates`), so a batch is never a run of consecutive frames.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.keypoints import NUM_KEYPOINTS, SPINE_IDS


@dataclass(frozen=True)
class Candidate:
    """An unlabelled instance as the selector sees it."""

    instance_id: int
    uncertainty: float
    keypoint_uncertainty: np.ndarray  # (37,), higher = less sure
    embedding: np.ndarray  # (D,), for diversity: model features or a pose embedding
    keypoints: np.ndarray | None = None  # (37, 3) predicted, pixels (for the pose prior)
    bbox: tuple[float, ...] | None = None  # the person box [x, y, w, h]
    implausibility: float | None = None  # pose-prior negative log-likelihood (higher = less plausible)
    expected_effort: float | None = None  # expected keypoints a human will correct
    group: str | None = None  # the image's frame group (a video, a render sequence; a photo: itself)
    time_s: float | None = None  # the frame's time in its video (None: not a video frame)
    given: tuple[int, ...] = ()  # points a person placed (a completion): not in doubt, not to correct


Strategy = Callable[[Sequence[Candidate], int, np.random.Generator], list[int]]

#: Two candidates of one frame group are near-duplicates when their frames are at most this far
#: apart and their boxes overlap at least NEAR_IOU: the same person, in the same place, a moment later.
NEAR_SECONDS = 0.5
NEAR_IOU = 0.5


def pose_embedding(keypoints: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """A translation- and scale-free pose vector: keypoints relative to the box centre / box size.

    Used for diversity when the model gives no features: two frames of the same pose land close.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, -1)[:, :2]
    x, y, w, h = (float(v) for v in bbox)
    scale = max(w, h, 1e-6)
    centre = np.array([x + w / 2, y + h / 2])
    return ((kps - centre) / scale).ravel()


def select_random(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """The baseline: a uniform sample of the pool."""
    order = rng.permutation(len(cands))[:budget]
    return [cands[i].instance_id for i in order]


def select_uncertain(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """The `budget` most uncertain instances (ties broken at random)."""
    return _top(cands, np.array([c.uncertainty for c in cands]), budget, rng)


def select_spine(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """Target the spine: rank by the mean uncertainty of the 9 spine keypoints."""
    spine = np.array([float(np.mean(c.keypoint_uncertainty[list(SPINE_IDS)])) for c in cands])
    return _top(cands, spine, budget, rng)


def select_uncertain_diverse(
    cands: Sequence[Candidate], budget: int, rng: np.random.Generator, pool_factor: int = 3
) -> list[int]:
    """Uncertainty, then diversity: k-center greedy over the `pool_factor * budget` most uncertain.

    The most uncertain instance starts the batch; each next pick maximises its distance (in
    embedding space) to everything picked so far times its uncertainty, so one batch does not hold
    50 near-identical frames of the same sequence, nor far-away frames the model is sure about.
    """
    return _kcenter(cands, np.array([c.uncertainty for c in cands]), budget, rng, pool_factor)


def select_implausible(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                       pool_factor: int = 3) -> list[int]:
    """The least plausible poses under the synthetic pose prior (VL4Pose-like), k-center diverse.

    The prior's NLL is turned into a rank in [0, 1] within the pool and averaged with the
    uncertainty's rank: an implausible pose the model is also unsure of comes first, and a pose
    the prior cannot tell apart (all plausible) falls back to uncertainty. Candidates without a
    prior score (no synthetic labels yet) rank by uncertainty alone.
    """
    unc = _rank(np.array([c.uncertainty for c in cands]))
    nll = np.array([np.nan if c.implausibility is None else c.implausibility for c in cands], dtype=float)
    if np.isnan(nll).all():
        return _kcenter(cands, unc, budget, rng, pool_factor)
    finite = nll[np.isfinite(nll)]
    top = float(finite.max()) + 1.0 if finite.size else 1.0
    # no body frame (inf) ranks above everything; an unscored candidate ranks lowest
    filled = np.where(np.isnan(nll), -np.inf, np.where(np.isposinf(nll), top, nll))
    return _kcenter(cands, 0.5 * (_rank(filled) + unc), budget, rng, pool_factor)


def select_effort(cands: Sequence[Candidate], budget: int, rng: np.random.Generator,
                  pool_factor: int = 3) -> list[int]:
    """Pick what would save most clicks: the highest expected correction effort, k-center diverse.

    An instance where the annotator will move many keypoints is one the model gets badly wrong
    (the correction teaches it most) and one auto-accept must never take; diversity keeps a batch
    from being one hard sequence. Without effort estimates it is `diversity`.
    """
    effort = [c.expected_effort for c in cands]
    if any(e is None for e in effort):
        return select_uncertain_diverse(cands, budget, rng, pool_factor)
    return _kcenter(cands, np.array(effort, dtype=float), budget, rng, pool_factor)


def select_kcenter(cands: Sequence[Candidate], budget: int, rng: np.random.Generator) -> list[int]:
    """Pure k-center greedy coverage of the embedding space (no uncertainty): the diversity-only
    baseline, starting from a random instance."""
    if budget <= 0 or not cands:
        return []
    emb = np.stack([_unit(c.embedding) for c in cands])
    first = int(rng.integers(len(cands)))
    chosen = [first]
    nearest = np.linalg.norm(emb - emb[first], axis=1)
    while len(chosen) < min(budget, len(cands)):
        nxt = int(np.argmax(nearest + rng.random(len(cands)) * 1e-12))
        if nearest[nxt] <= 0:
            rest = [i for i in rng.permutation(len(cands)).tolist() if i not in chosen]
            chosen += rest[: budget - len(chosen)]
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [cands[i].instance_id for i in chosen]


STRATEGIES: dict[str, Strategy] = {
    "random": select_random,
    "uncertainty": select_uncertain,
    "diversity": select_uncertain_diverse,
    "spine": select_spine,
    "kcenter": select_kcenter,
    "plausibility": select_implausible,
    "effort": select_effort,
}
#: The default: what wins on spine AP at equal budget in bench/active_learning.py (issue 13; no strategy
#: beat a uniform pick there, docs/active-learning.md "Measured savings"; tests/test_al_stats.py checks).
DEFAULT_STRATEGY = "random"


def select(cands: Sequence[Candidate], budget: int, strategy: str = DEFAULT_STRATEGY,
           seed: int = 0) -> list[int]:
    """Pick up to `budget` instance ids from `cands` with the named strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if budget <= 0 or not cands:
        return []
    return STRATEGIES[strategy](thin_near_duplicates(cands), budget, np.random.default_rng(seed))


def thin_near_duplicates(cands: Sequence[Candidate], seconds: float = NEAR_SECONDS,
                         min_iou: float = NEAR_IOU) -> list[Candidate]:
    """The candidates less the near-duplicates of a more uncertain one (same group, frames at most
    `seconds` apart, boxes overlapping by `min_iou`), in their order. Candidates without a group,
    a frame time or a box are all kept: photos and renders are not thinned."""
    kept_times: dict[str, list[float]] = {}
    kept_at: dict[str, list[Candidate]] = {}
    dropped: set[int] = set()
    for i in sorted(range(len(cands)), key=lambda i: -cands[i].uncertainty):
        c = cands[i]
        if c.group is None or c.time_s is None or c.bbox is None:
            continue
        times, near = kept_times.setdefault(c.group, []), kept_at.setdefault(c.group, [])
        lo, hi = bisect.bisect_left(times, c.time_s - seconds), bisect.bisect_right(times, c.time_s + seconds)
        if any(_box_iou(c.bbox, k.bbox) >= min_iou for k in near[lo:hi] if k.bbox is not None):
            dropped.add(i)
            continue
        at = bisect.bisect_right(times, c.time_s)
        times.insert(at, c.time_s)
        near.insert(at, c)
    return [c for i, c in enumerate(cands) if i not in dropped]


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _kcenter(cands: Sequence[Candidate], scores: np.ndarray, budget: int, rng: np.random.Generator,
             pool_factor: int) -> list[int]:
    """k-center greedy over the `pool_factor * budget` highest-scoring candidates, each pick's
    distance to the batch weighted by its score; the top-scoring candidate starts the batch."""
    if budget <= 0 or not cands:
        return []
    pool_ids = _top_indices(scores, min(len(cands), pool_factor * budget), rng)
    emb = np.stack([_unit(cands[i].embedding) for i in pool_ids])
    weight = np.maximum(scores[pool_ids], 1e-6)
    chosen = [0]  # pool is sorted highest score first
    nearest = np.linalg.norm(emb - emb[0], axis=1)
    while len(chosen) < min(budget, len(pool_ids)):
        nxt = int(np.argmax(nearest * weight))
        if nearest[nxt] <= 0:
            # all remaining are duplicates of chosen ones: fall back to score order
            rest = [i for i in range(len(pool_ids)) if i not in chosen]
            chosen += rest[: budget - len(chosen)]
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [cands[pool_ids[i]].instance_id for i in chosen]


def _rank(values: np.ndarray) -> np.ndarray:
    """Average rank scaled to [0, 1] (ties share a rank); 0 for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= 1:
        return np.zeros_like(v)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(v.size, dtype=np.float64)
    for value in np.unique(v):
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks / (v.size - 1)


def _top_indices(scores: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    jitter = rng.random(len(scores)) * 1e-9  # random tie-break, never reorders distinct scores
    return [int(i) for i in np.argsort(-(scores + jitter), kind="stable")[:k]]


def _top(cands: Sequence[Candidate], scores: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    return [cands[i].instance_id for i in _top_indices(scores, budget, rng)]
