"""Selection strategies and the auto-accept calibration, on cases whose answer is known by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.active_learning.calibration import calibrate_threshold
from pipeline.active_learning.selection import Candidate, pose_embedding, select
from schemas.keypoints import NUM_KEYPOINTS, SPINE_IDS


def _cand(iid: int, unc: float, emb: list[float], spine: float = 0.0) -> Candidate:
    kpu = np.zeros(NUM_KEYPOINTS)
    kpu[list(SPINE_IDS)] = spine
    return Candidate(iid, unc, kpu, np.asarray(emb, dtype=float))


def test_uncertainty_takes_the_most_uncertain() -> None:
    cands = [_cand(i, u, [1, 0]) for i, u in enumerate([0.1, 0.9, 0.5, 0.7])]
    assert select(cands, 2, "uncertainty") == [1, 3]


def test_random_is_seeded_and_within_the_pool() -> None:
    cands = [_cand(i, 0.0, [1, 0]) for i in range(50)]
    a, b = select(cands, 10, "random", seed=3), select(cands, 10, "random", seed=3)
    assert a == b and len(set(a)) == 10 and set(a) <= set(range(50))
    assert select(cands, 10, "random", seed=4) != a


def test_diversity_skips_near_duplicates() -> None:
    # three near-identical very uncertain frames and one different, slightly less uncertain frame
    cands = [_cand(0, 0.99, [1, 0]), _cand(1, 0.98, [1, 0.001]), _cand(2, 0.97, [1, 0.002]),
             _cand(3, 0.90, [0, 1]), _cand(4, 0.1, [-1, 0])]
    assert select(cands, 2, "uncertainty") == [0, 1]
    assert select(cands, 2, "diversity") == [0, 3]


def test_spine_targets_spine_keypoints() -> None:
    cands = [_cand(0, 0.9, [1], spine=0.1), _cand(1, 0.2, [1], spine=0.8)]
    assert select(cands, 1, "spine") == [1]
    assert select(cands, 1, "uncertainty") == [0]


def test_unknown_strategy_and_empty_pool() -> None:
    with pytest.raises(ValueError, match="unknown selection strategy"):
        select([_cand(0, 1, [1])], 1, "clever")
    assert select([], 5, "diversity") == []


def test_pose_embedding_ignores_translation_and_scale() -> None:
    rng = np.random.default_rng(0)
    kps = rng.random((NUM_KEYPOINTS, 2)) * 50
    a = pose_embedding(kps, [0, 0, 50, 50])
    b = pose_embedding(kps * 2 + 100, [100, 100, 100, 100])
    assert np.allclose(a, b)


def test_calibration_picks_the_longest_precise_prefix() -> None:
    unc = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    oks = [0.9, 0.95, 0.8, 0.85, 0.9, 0.2, 0.3, 0.1]
    # z=0: the point estimate (the Wilson bound itself is tested in tests/test_rounds.py)
    t = calibrate_threshold(unc, oks, good_oks=0.75, min_precision=0.9, min_samples=3, z=0.0)
    assert t.threshold == 0.5 and t.precision == 1.0 and t.coverage == 5 / 8
    assert t.accepts(0.45) and not t.accepts(0.55)
    # with a 0.8 precision target one bad label is tolerated: 5 good of 6
    assert calibrate_threshold(unc, oks, min_precision=0.8, min_samples=3, z=0.0).threshold == 0.6


def test_calibration_accepts_nothing_without_evidence() -> None:
    assert calibrate_threshold([0.1, 0.2], [1.0, 1.0], min_samples=5).threshold == float("-inf")
    bad = calibrate_threshold([0.1, 0.2, 0.3, 0.4, 0.5], [0.1] * 5, min_samples=2)
    assert bad.threshold == float("-inf") and not bad.accepts(0.0)


def _scored(iid: int, unc: float, emb: Sequence[float], nll: float | None = None,
            effort: float | None = None) -> Candidate:
    return Candidate(iid, unc, np.zeros(NUM_KEYPOINTS), np.asarray(emb, dtype=float),
                     implausibility=nll, expected_effort=effort)


def test_plausibility_prefers_implausible_poses_the_model_is_unsure_of() -> None:
    # ranks of nll: [0, 1/3, 1, 2/3]; of uncertainty: [1, 0, 2/3, 1/3]; means: [.5, .17, .83, .5]
    cands = [_scored(0, 0.9, [1, 0], nll=1.0), _scored(1, 0.1, [0, 1], nll=2.0),
             _scored(2, 0.5, [-1, 0], nll=50.0), _scored(3, 0.3, [0, -1], nll=9.0)]
    assert select(cands, 1, "plausibility") == [2]
    # a collapsed skeleton (inf) outranks every finite score
    cands.append(_scored(4, 0.0, [1, 1], nll=float("inf")))
    assert select(cands, 1, "plausibility", seed=1)[0] in (2, 4)
    # without prior scores it is uncertainty + diversity
    plain = [_scored(0, 0.2, [1, 0]), _scored(1, 0.9, [0, 1]), _scored(2, 0.5, [-1, 0])]
    assert select(plain, 1, "plausibility") == [1]


def test_effort_picks_the_most_clicks_and_stays_diverse() -> None:
    cands = [_scored(0, 0.1, [1, 0], effort=9.0), _scored(1, 0.1, [1, 0.001], effort=8.9),
             _scored(2, 0.9, [0, 1], effort=6.0), _scored(3, 0.9, [-1, 0], effort=0.5)]
    assert select(cands, 2, "effort") == [0, 2]  # 1 duplicates 0; 2 is far and costly
    # missing estimates: falls back to `diversity` (uncertainty first)
    assert select([_scored(0, 0.1, [1, 0]), _scored(1, 0.9, [0, 1])], 1, "effort") == [1]


def test_kcenter_covers_the_embedding_space() -> None:
    points: list[list[float]] = [[1, 0], [1, 0.01], [0, 1], [-1, 0], [0, -1]]
    cands = [_cand(i, 0.5, e) for i, e in enumerate(points)]
    picked = select(cands, 4, "kcenter", seed=0)
    directions = {tuple(np.round(cands[i].embedding)) for i in picked}
    assert len(picked) == 4 and len(directions) == 4  # never both near-duplicates among 4 of 5
