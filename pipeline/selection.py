"""Which uncertain pseudo-labels go to annotators: pluggable selection strategies.

Every strategy sees the same candidates (one per unlabelled instance, with the model's uncertainty,
per-keypoint uncertainty and an embedding) and returns at most `budget` instance ids, most useful
first. `random` is the baseline every other strategy is measured against (bench/active_learning.py).
"""

from __future__ import annotations

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


Strategy = Callable[[Sequence[Candidate], int, np.random.Generator], list[int]]


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
    if budget <= 0 or not cands:
        return []
    scores = np.array([c.uncertainty for c in cands])
    pool_ids = _top_indices(scores, min(len(cands), pool_factor * budget), rng)
    emb = np.stack([_unit(cands[i].embedding) for i in pool_ids])
    weight = np.maximum(scores[pool_ids], 1e-6)
    chosen = [0]  # pool is sorted most uncertain first
    nearest = np.linalg.norm(emb - emb[0], axis=1)
    while len(chosen) < min(budget, len(pool_ids)):
        nxt = int(np.argmax(nearest * weight))
        if nearest[nxt] <= 0:
            # all remaining are duplicates of chosen ones: fall back to uncertainty order
            rest = [i for i in range(len(pool_ids)) if i not in chosen]
            chosen += rest[: budget - len(chosen)]
            break
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(emb - emb[nxt], axis=1))
    return [cands[pool_ids[i]].instance_id for i in chosen]


STRATEGIES: dict[str, Strategy] = {
    "random": select_random,
    "uncertainty": select_uncertain,
    "diversity": select_uncertain_diverse,
    "spine": select_spine,
}
#: The default, chosen by bench/active_learning.py (see README, "Active learning").
DEFAULT_STRATEGY = "diversity"


def select(cands: Sequence[Candidate], budget: int, strategy: str = DEFAULT_STRATEGY,
           seed: int = 0) -> list[int]:
    """Pick up to `budget` instance ids from `cands` with the named strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if budget <= 0 or not cands:
        return []
    return STRATEGIES[strategy](list(cands), budget, np.random.default_rng(seed))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _top_indices(scores: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    jitter = rng.random(len(scores)) * 1e-9  # random tie-break, never reorders distinct scores
    return [int(i) for i in np.argsort(-(scores + jitter), kind="stable")[:k]]


def _top(cands: Sequence[Candidate], scores: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    return [cands[i].instance_id for i in _top_indices(scores, budget, rng)]
