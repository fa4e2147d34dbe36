"""Uncertainty parts on arrays where the right value is known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.active_learning.uncertainty import (
    DEFAULT_WEIGHTS,
    SpineStats,
    confidence_uncertainty,
    flip_distance,
    flip_uncertainty,
    instance_uncertainty,
    rank_normalise,
    spearman,
    spine_anatomy,
)
from schemas.keypoints import NUM_KEYPOINTS, SIGMAS, SPINE_CHAIN

BOX = [0.0, 0.0, 100.0, 100.0]  # sqrt(area) = 100


def _with_chain(chain: np.ndarray) -> np.ndarray:
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, :2] = 50.0
    kps[:, 2] = 2
    kps[list(SPINE_CHAIN), :2] = chain
    return kps


def _straight(n: int = len(SPINE_CHAIN), step: float = 10.0) -> np.ndarray:
    """Sacrum at the bottom, skull at the top: y decreases along the chain."""
    return np.stack([np.full(n, 50.0), 200.0 - step * np.arange(n)], axis=1)


def test_confidence_is_one_minus_clipped_score() -> None:
    scores = np.zeros(NUM_KEYPOINTS)
    scores[:5] = [1.0, 0.0, 0.5, 1.7, -0.2]
    u = confidence_uncertainty(scores)
    assert u[:5].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0, 1.0])
    assert u[5:] == pytest.approx(1.0)


def test_flip_distance_is_normalised_by_box_scale() -> None:
    a = np.zeros((NUM_KEYPOINTS, 2))
    b = a.copy()
    b[0] = [3.0, 4.0]  # 5 px
    d = flip_distance(a, b, BOX)
    assert d[0] == pytest.approx(0.05)
    assert d[1:] == pytest.approx(0.0)
    u = flip_uncertainty(a, b, BOX)
    k = 2 * SIGMAS[0]
    assert u[0] == pytest.approx(1 - math.exp(-(0.05**2) / (2 * k * k)))
    assert flip_uncertainty(a, a, BOX) == pytest.approx(0.0)


def test_straight_spine_is_plausible() -> None:
    anatomy = spine_anatomy(_with_chain(_straight()))
    assert anatomy.order == 0.0
    assert anatomy.crossing == 0.0
    assert anatomy.score == 0.0
    assert anatomy.per_keypoint.max() == 0.0


def test_swapped_points_are_out_of_order_and_blamed() -> None:
    chain = _straight()
    chain[[3, 4]] = chain[[4, 3]]  # spine_03 above spine_04
    anatomy = spine_anatomy(_with_chain(chain))
    # segments 2->3', 3'->4', 4'->5: only the middle one points backwards
    assert anatomy.order == pytest.approx(1 / 8)
    blamed = {SPINE_CHAIN[3], SPINE_CHAIN[4]}
    assert {i for i in range(NUM_KEYPOINTS) if anatomy.per_keypoint[i] > 0} == blamed


def test_self_crossing_chain_is_detected() -> None:
    # segment 4 (P4->P5) cuts back across segment 2 (P2->P3); no other pair crosses
    zig = np.array([[50, 200], [50, 180], [70, 160], [30, 170], [40, 190], [60, 150], [50, 140],
                    [50, 130], [50, 120]], dtype=float)
    anatomy = spine_anatomy(_with_chain(zig))
    assert anatomy.crossing == pytest.approx(1 / 21)  # 21 pairs of non-adjacent segments
    assert anatomy.order > 0.0
    for n in (2, 3, 4, 5):
        assert anatomy.per_keypoint[SPINE_CHAIN[n]] > 0.0


def test_stats_flag_segment_length_and_bend_outliers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = []
    for _ in range(50):
        chain = _straight() + rng.normal(0.0, 0.3, size=(len(SPINE_CHAIN), 2))
        labels.append(_with_chain(chain))
    partly = _with_chain(_straight())
    partly[SPINE_CHAIN[4], 2] = 0  # not fully labelled: not used
    stats = SpineStats.fit([*labels, partly])
    assert stats.count == 50
    assert np.allclose(stats.ratio_mean, 1 / 8, atol=0.01)

    path = stats.save(tmp_path / "stats.json")
    assert SpineStats.load(path) == stats

    normal = spine_anatomy(_with_chain(_straight()), stats)
    assert normal.length == 0.0 and normal.bend == 0.0

    long_first = _straight()
    long_first[1:, 1] -= 30.0  # first segment 4x the others
    odd = spine_anatomy(_with_chain(long_first), stats)
    assert odd.length > 0.0
    assert odd.order == 0.0 and odd.crossing == 0.0

    bent = _straight()
    bent[5:, 0] += np.arange(1, 5) * 10.0  # 45 degree kink at spine_05
    kinked = spine_anatomy(_with_chain(bent), stats)
    assert kinked.bend > 0.0
    assert kinked.per_keypoint[SPINE_CHAIN[4]] > 0.0


def test_fit_needs_two_full_chains() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        SpineStats.fit([_with_chain(_straight())])


def test_combined_is_the_documented_weighted_mean() -> None:
    kps = _with_chain(_straight())
    scores = np.full(NUM_KEYPOINTS, 0.8)
    flipped = kps[:, :2].copy()
    flipped[0] += [3.0, 4.0]
    unc = instance_uncertainty(kps, scores, BOX, flip_keypoints=flipped)
    flip_part = float(flip_uncertainty(kps, flipped, BOX).mean())
    w = DEFAULT_WEIGHTS
    expected = (w["confidence"] * 0.2 + w["flip"] * flip_part + w["anatomy"] * 0.0) / sum(w.values())
    assert unc.confidence == pytest.approx(0.2)
    assert unc.flip == pytest.approx(flip_part)
    assert unc.combined == pytest.approx(expected)
    assert unc.as_json()["weights"]["flip"] == pytest.approx(w["flip"] / sum(w.values()))

    no_flip = instance_uncertainty(kps, scores, BOX)
    assert no_flip.flip is None
    assert no_flip.combined == pytest.approx(w["confidence"] * 0.2 / (w["confidence"] + w["anatomy"]))
    assert no_flip.per_keypoint.min() >= 0.0 and no_flip.per_keypoint.max() <= 1.0


def test_rank_helpers() -> None:
    assert rank_normalise([10, 30, 20]).tolist() == [0.0, 1.0, 0.5]
    assert rank_normalise([1, 1, 2]).tolist() == [0.25, 0.25, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
