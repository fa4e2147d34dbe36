"""How much to distrust a predicted pose: the signal that picks what people should label next.

Three independent views of one prediction, each mapped to [0, 1] (0 = trust, 1 = distrust):

1. confidence: 1 - the model's own keypoint score (SimCC / heatmap maximum, clipped to [0, 1]);
2. flip disagreement: the prediction on the mirrored crop, mapped back, against the plain one,
   as 1 - the OKS term between the two (so it is scaled by box size and keypoint sigma exactly like
   the metric the labels are judged by); the raw distance / sqrt(box area) is kept too;
3. anatomy: whether the 9-point spine chain is a plausible spine - points out of order along the
   chain, a chain that crosses itself, segment-length ratios and bends far outside what the
   synthetic ground truth shows (`SpineStats`, fitted from labels and saved as JSON).

The combined score is a fixed weighted mean of the three (weights in `DEFAULT_WEIGHTS`, see
docs/uncertainty.md). A fixed mapping, unlike a rank within one batch, means a stored score means
the same thing in every round, so a threshold (auto-accept, review) can be set once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata, spearmanr

from pipeline.evaluate import oks_terms
from schemas.keypoint_array import keypoint_rows
from schemas.keypoints import NUM_KEYPOINTS, SPINE_CHAIN

#: Weights of the combined score (normalised over the parts that are available).
DEFAULT_WEIGHTS: dict[str, float] = {"confidence": 1.0, "flip": 1.0, "anatomy": 0.5}

#: A length ratio or bend this many standard deviations from the synthetic mean starts to count
#: as implausible; at Z_FULL it counts fully.
Z_START = 2.0
Z_FULL = 4.0
#: Smallest standard deviation used, so a near-constant training statistic cannot make tiny
#: deviations look like outliers.
MIN_RATIO_STD = 0.02
MIN_TURN_STD = math.radians(5.0)

_SEGMENTS = len(SPINE_CHAIN) - 1


def _chain_geometry(chain: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Segment-length ratios (length / total length) and absolute turning angles of a 2D chain."""
    seg = np.diff(chain, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    total = lengths.sum()
    ratios = lengths / total if total > 0 else np.full(len(lengths), 1.0 / len(lengths))
    angles = np.arctan2(seg[:, 1], seg[:, 0])
    turns = np.abs((np.diff(angles) + np.pi) % (2 * np.pi) - np.pi)
    return ratios, turns


@dataclass(frozen=True)
class SpineStats:
    """What a real spine chain looks like in 2D, learned from ground-truth labels."""

    ratio_mean: list[float]
    ratio_std: list[float]
    turn_mean: list[float]
    turn_std: list[float]
    count: int

    @classmethod
    def fit(cls, keypoints: Iterable[ArrayLike]) -> SpineStats:
        """Fit from labelled instances ((37, 3) or flat triplets); uses those with all 9 spine points
        labelled (v > 0) and a chain of non-zero length."""
        ratios, turns = [], []
        for kps in keypoints:
            arr = keypoint_rows(kps)
            chain = arr[list(SPINE_CHAIN)]
            if arr.shape[1] == 3 and not (chain[:, 2] > 0).all():
                continue
            seg_lengths = np.linalg.norm(np.diff(chain[:, :2], axis=0), axis=1)
            if seg_lengths.sum() <= 1e-6:
                continue
            r, t = _chain_geometry(chain[:, :2])
            ratios.append(r)
            turns.append(t)
        if len(ratios) < 2:
            raise ValueError(f"need at least 2 instances with the full spine labelled, got {len(ratios)}")
        r_arr, t_arr = np.stack(ratios), np.stack(turns)
        return cls(
            ratio_mean=r_arr.mean(0).tolist(),
            ratio_std=np.maximum(r_arr.std(0), MIN_RATIO_STD).tolist(),
            turn_mean=t_arr.mean(0).tolist(),
            turn_std=np.maximum(t_arr.std(0), MIN_TURN_STD).tolist(),
            count=len(ratios),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SpineStats:
        data = json.loads(Path(path).read_text())
        return cls(**data)


def _outlier(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """0 within Z_START standard deviations, rising linearly to 1 at Z_FULL."""
    return np.clip((z - Z_START) / (Z_FULL - Z_START), 0.0, 1.0)


def _segments_cross(a: NDArray[np.float64], b: NDArray[np.float64],
                    c: NDArray[np.float64], d: NDArray[np.float64]) -> bool:
    """Proper intersection of segments ab and cd (touching end points does not count)."""

    def orient(p: NDArray[np.float64], q: NDArray[np.float64], r: NDArray[np.float64]) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    return o1 * o2 < 0 and o3 * o4 < 0


@dataclass(frozen=True)
class Anatomy:
    """Plausibility of a predicted spine chain; every field is in [0, 1] (1 = implausible)."""

    order: float  # fraction of chain segments pointing backwards along the chain direction
    crossing: float  # fraction of non-adjacent segment pairs that cross
    length: float  # mean outlier level of segment-length ratios (0 without stats)
    bend: float  # mean outlier level of turning angles (0 without stats)
    score: float  # mean of the parts used
    per_keypoint: NDArray[np.float64] = field(repr=False)  # (37,), 0 outside the spine


def spine_anatomy(keypoints: ArrayLike, stats: SpineStats | None = None) -> Anatomy:
    """Score the spine chain of one predicted instance (pixels; (37, 2|3) or flat triplets)."""
    chain = keypoint_rows(keypoints)[list(SPINE_CHAIN), :2]
    per_point = np.zeros(len(SPINE_CHAIN))
    seg = np.diff(chain, axis=0)
    direction = chain[-1] - chain[0]
    norm = float(np.linalg.norm(direction))
    backwards = (seg @ (direction / norm) < 0) if norm > 0 else np.ones(_SEGMENTS, dtype=bool)
    for j in np.flatnonzero(backwards):
        per_point[j] += 1.0
        per_point[j + 1] += 1.0
    order = float(backwards.mean())

    pairs = [(i, j) for i in range(_SEGMENTS) for j in range(i + 2, _SEGMENTS)]
    crossed = 0
    for i, j in pairs:
        if _segments_cross(chain[i], chain[i + 1], chain[j], chain[j + 1]):
            crossed += 1
            per_point[[i, i + 1, j, j + 1]] += 1.0
    crossing = crossed / len(pairs)

    parts = [order, crossing]
    length = bend = 0.0
    if stats is not None:
        ratios, turns = _chain_geometry(chain)
        z_len = np.abs(ratios - np.asarray(stats.ratio_mean)) / np.asarray(stats.ratio_std)
        z_turn = np.abs(turns - np.asarray(stats.turn_mean)) / np.asarray(stats.turn_std)
        out_len, out_turn = _outlier(z_len), _outlier(z_turn)
        length, bend = float(out_len.mean()), float(out_turn.mean())
        per_point[:-1] += out_len
        per_point[1:] += out_len
        per_point[1:-1] += out_turn
        parts += [length, bend]
    per_keypoint = np.zeros(NUM_KEYPOINTS)
    per_keypoint[list(SPINE_CHAIN)] = np.clip(per_point, 0.0, 1.0)
    return Anatomy(order, crossing, length, bend, float(np.mean(parts)), per_keypoint)


def confidence_uncertainty(scores: ArrayLike) -> NDArray[np.float64]:
    """Per-keypoint 1 - score, with the score clipped to [0, 1]."""
    s = np.asarray(scores, dtype=np.float64).reshape(NUM_KEYPOINTS)
    return 1.0 - np.clip(s, 0.0, 1.0)


def box_scale(bbox: ArrayLike) -> float:
    """sqrt(box area): the length that keypoint distances are normalised by."""
    _x, _y, w, h = (float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(4))
    return math.sqrt(max(w * h, 1e-12))


def flip_distance(keypoints: ArrayLike, flip_keypoints: ArrayLike, bbox: ArrayLike) -> NDArray[np.float64]:
    """Per-keypoint distance between the plain and the flip-test prediction / sqrt(box area)."""
    a = keypoint_rows(keypoints)[:, :2]
    b = keypoint_rows(flip_keypoints)[:, :2]
    return np.linalg.norm(a - b, axis=1) / box_scale(bbox)


def flip_uncertainty(keypoints: ArrayLike, flip_keypoints: ArrayLike, bbox: ArrayLike) -> NDArray[np.float64]:
    """Per-keypoint 1 - exp(-d^2 / (2 (2 sigma)^2)), d = flip_distance: 1 - the OKS term of the
    two predictions treated as label and guess (box area as the scale)."""
    a, b = keypoint_rows(keypoints), keypoint_rows(flip_keypoints)
    return 1.0 - oks_terms(a[:, :2], b[:, :2], area=box_scale(bbox) ** 2)


@dataclass(frozen=True)
class Uncertainty:
    """Per-instance uncertainty with its parts; `combined` is what selection ranks by."""

    combined: float
    confidence: float
    flip: float | None
    anatomy: float
    per_keypoint: NDArray[np.float64] = field(repr=False)  # (37,) combined per keypoint
    parts: dict[str, Any] = field(default_factory=dict)  # JSON-able detail for the store

    def as_json(self) -> dict[str, Any]:
        return {
            "combined": self.combined,
            "confidence": self.confidence,
            "flip": self.flip,
            "anatomy": self.anatomy,
            "per_keypoint": [round(float(v), 5) for v in self.per_keypoint],
            **self.parts,
        }


def instance_uncertainty(
    keypoints: ArrayLike,
    scores: ArrayLike,
    bbox: ArrayLike,
    *,
    flip_keypoints: ArrayLike | None = None,
    stats: SpineStats | None = None,
    weights: Mapping[str, float] | None = None,
    points: ArrayLike | None = None,
) -> Uncertainty:
    """Combine the three views of one prediction into one score in [0, 1].

    Without a flip-test prediction the flip part is left out and the weights renormalise.
    `points` (37 booleans, default all) are the points that count: completing a person's partial
    label, only the points the model places are in doubt (the person's are 0 per keypoint, and the
    spine's anatomy counts only while some spine point is the model's).
    """
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    mask = np.ones(NUM_KEYPOINTS, dtype=bool) if points is None else np.asarray(points, dtype=bool)
    if not mask.any():
        raise ValueError("no point left to be uncertain about")
    conf_k = np.where(mask, confidence_uncertainty(scores), 0.0)
    anatomy = spine_anatomy(keypoints, stats)
    anatomy_k = np.where(mask, anatomy.per_keypoint, 0.0)
    parts_k: dict[str, NDArray[np.float64]] = {"confidence": conf_k, "anatomy": anatomy_k}
    values: dict[str, float] = {"confidence": float(conf_k[mask].mean())}
    if mask[list(SPINE_CHAIN)].any():
        values["anatomy"] = anatomy.score
    detail: dict[str, Any] = {
        "anatomy_order": anatomy.order,
        "anatomy_crossing": anatomy.crossing,
        "anatomy_length": anatomy.length,
        "anatomy_bend": anatomy.bend,
        "anatomy_has_stats": stats is not None,
    }
    flip_value: float | None = None
    if flip_keypoints is not None:
        flip_k = np.where(mask, flip_uncertainty(keypoints, flip_keypoints, bbox), 0.0)
        parts_k["flip"] = flip_k
        flip_value = float(flip_k[mask].mean())
        values["flip"] = flip_value
        detail["flip_distance"] = float(flip_distance(keypoints, flip_keypoints, bbox)[mask].mean())
    if points is not None:
        detail["points"] = int(mask.sum())
    used = {k: w.get(k, 0.0) for k in values}
    total = sum(used.values())
    if total <= 0:
        raise ValueError(f"weights {w} give no weight to any available part {sorted(values)}")
    combined = sum(used[k] * values[k] for k in values) / total
    per_keypoint = sum(used[k] * parts_k[k] for k in values) / total
    detail["weights"] = {k: v / total for k, v in used.items()}
    return Uncertainty(
        combined=float(combined),
        confidence=values["confidence"],
        flip=flip_value,
        anatomy=values.get("anatomy", 0.0),
        per_keypoint=np.asarray(per_keypoint, dtype=np.float64),
        parts=detail,
    )


def rank_normalise(values: ArrayLike) -> NDArray[np.float64]:
    """Average rank of each value scaled to [0, 1] (ties share a rank): for comparing parts
    within one pool when their scales differ."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= 1:
        return np.zeros_like(v)
    return (np.asarray(rankdata(v, method="average"), dtype=np.float64) - 1.0) / (v.size - 1)


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation (scipy), NaN when either side is constant (no ranking to compare)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)
