"""Correction effort (pipeline/active_learning/correction_effort.py): which points count as
moved, by hand; the isotonic calibration; and the measured effort of a round read from a real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from pipeline.active_learning.correction_effort import (
    EffortModel,
    EffortRule,
    correction_effort,
    expected_effort,
    fit_effort_model,
    isotonic,
    keypoint_signal,
    moved_keypoints,
    round_effort,
)
from pipeline.store import Store
from pipeline.store.models import AnnotationTask
from schemas.keypoints import INDEX, NUM_KEYPOINTS, SPINE_IDS

AREA = 10_000.0  # sqrt = 100 px


def truth() -> np.ndarray:
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(50, 150, (NUM_KEYPOINTS, 2)), np.full((NUM_KEYPOINTS, 1), 2.0)], axis=1)
    return kps


def test_click_noise_is_not_a_correction_and_a_moved_spine_is() -> None:
    final = truth()
    pre = final.copy()
    pre[:, 0] += 1.5  # click noise: OKS term ~ 0.99 for every sigma
    assert correction_effort(pre, final, area=AREA) == 0
    pre[list(SPINE_IDS), 1] += 50  # spine sigma 0.07-0.10: exp(-2500 / (2 * 1e4 * 0.04)) = 0.04 < 0.8
    assert correction_effort(pre, final, area=AREA) == len(SPINE_IDS)


def test_the_oks_threshold_scales_with_sigma_and_size() -> None:
    final = truth()
    pre = final.copy()
    pre[:, 0] += 12.0
    moved = moved_keypoints(pre, final, area=AREA)
    # nose, sigma 0.026: exp(-144 / (2e4 * 0.052^2)) = exp(-2.66) = 0.07 -> moved
    # left hip, sigma 0.107: exp(-144 / (2e4 * 0.214^2)) = exp(-0.157) = 0.85 -> kept
    assert moved[INDEX["nose"]] and not moved[INDEX["left_hip"]]
    # a person four times the area: the nose term is exp(-0.665) = 0.51 -> still moved; hips kept
    big = moved_keypoints(pre, final, area=4 * AREA)
    assert big[INDEX["nose"]] and not big[INDEX["left_hip"]]
    # a fixed pixel rule ignores sigma: 12 px > 10 px everywhere
    assert moved_keypoints(pre, final, area=AREA, rule=EffortRule(threshold_px=10)).all()
    assert not moved_keypoints(pre, final, area=AREA, rule=EffortRule(threshold_px=13)).any()


def test_added_and_deleted_points_count() -> None:
    final = truth()
    pre = final.copy()
    pre[INDEX["head"]] = 0  # not pre-annotated, labelled by the annotator: placed
    final[INDEX["left_heel"]] = 0  # pre-annotated, removed by the annotator: deleted
    assert correction_effort(pre, final, area=AREA) == 2
    assert correction_effort(pre, final, area=AREA, rule=EffortRule(count_deletions=False)) == 1
    both_off = pre.copy()
    both_off[INDEX["left_heel"]] = 0
    final[INDEX["left_heel"], :2] = 0
    assert correction_effort(both_off, final, area=AREA) == 1  # absent in both: nothing to do


def test_isotonic_pools_adjacent_violators() -> None:
    knots, fitted = isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert knots.tolist() == [0.1, 0.2, 0.3, 0.4] and fitted.tolist() == [0.0, 0.5, 0.5, 1.0]
    # ties at 0.3 first average to 0.5 (weight 2), which violates 1.0 at 0.2: (1 + 2 * 0.5) / 3
    knots, fitted = isotonic([0.3, 0.1, 0.3, 0.2], [1, 0, 0, 1])
    assert knots.tolist() == [0.1, 0.2, 0.3] and fitted == pytest.approx([0.0, 2 / 3, 2 / 3])


def test_expected_effort_uncalibrated_and_calibrated() -> None:
    u = np.zeros(NUM_KEYPOINTS)
    u[list(SPINE_IDS)] = 0.5
    assert expected_effort(u) == pytest.approx(4.5)  # 9 spine points at p = 0.5
    plaus = np.zeros(NUM_KEYPOINTS)
    plaus[list(SPINE_IDS)] = 1.0  # the prior is sure the spine is wrong: signal (0.5 + 1) / 2
    assert keypoint_signal(u, plaus)[INDEX["hip"]] == pytest.approx(0.75)
    assert expected_effort(u, plaus) == pytest.approx(9 * 0.75)
    # history: spine points with signal 0.5 were always corrected, those at 0 never
    signals = np.zeros((10, NUM_KEYPOINTS))
    signals[:5, list(SPINE_IDS)] = 0.5
    moved = signals > 0.4
    model = EffortModel.fit(signals, moved, min_per_group=20)
    assert model.samples == 10 and expected_effort(u, model=model) == pytest.approx(9.0)
    assert model.probabilities(np.zeros(NUM_KEYPOINTS)).sum() == pytest.approx(0.0)


def _image(path: Path) -> Path:
    PILImage.new("RGB", (200, 200), (20, 20, 20)).save(path)
    return path


def test_round_effort_reads_tasks_from_the_store(store: Store, tmp_path: Path) -> None:
    final = truth()
    per_kp = np.full(NUM_KEYPOINTS, 0.1)
    per_kp[list(SPINE_IDS)] = 0.9
    rounds = {1: 3, 2: 0}  # round -> spine points moved by the annotator
    for n, (number, wrong) in enumerate(rounds.items()):
        img = store.add_image(_image(tmp_path / f"{n}.png"), source="real", subset="t", group_key=f"g{n}",
                              width=200, height=200)
        inst = store.instance_id(img, f"p{n}")
        pre = final.copy()
        pre[list(SPINE_IDS[:wrong]), 0] += 60
        label = final.copy()
        if number == 2:
            label[INDEX["left_heel"]] = 0  # the annotator removes a pre-annotated heel
        pred = store.add_revision(inst, pre.ravel().tolist(), [40, 40, 120, 120], source="pseudo",
                                  accepted=False, round=number, uncertainty=0.5,
                                  quality={"uncertainty_parts": {"per_keypoint": per_kp.tolist()}})
        store.add_revision(inst, label.ravel().tolist(), [40, 40, 120, 120], area=AREA, source="human",
                           round=number, annotator="a@b")
        with store.session() as s:
            s.add(AnnotationTask(instance_id=inst, round=number, state="done", prediction_revision_id=pred))
    one, two = round_effort(store, 1), round_effort(store, 2)
    assert (one.tasks, one.moved, one.per_task, one.by_group["spine"], one.deleted) == (1, 3, 3.0, 3, 0)
    assert (two.tasks, two.moved, two.deleted, two.by_group["feet"]) == (1, 1, 1, 1)
    assert np.isnan(round_effort(store, 3).per_task)
    # calibration from that history: 2 x 17 body points at signal 0.1, none corrected -> P = 0
    # (the deleted heel is a feet point: 1 of 2 x 6 < 20 samples, the feet keep P = signal);
    # 2 x 9 spine points are fewer than the 20 a group needs: the spine keeps P = signal (0.9)
    model = fit_effort_model(store)
    probs = model.probabilities(keypoint_signal(per_kp))
    assert model.samples == 2 and probs[INDEX["nose"]] == 0.0 and probs[INDEX["hip"]] == pytest.approx(0.9)


def test_candidates_get_expected_effort_and_no_prior_without_synthetic_labels(store: Store) -> None:
    from pipeline.active_learning.correction_effort import with_estimates
    from pipeline.active_learning.selection import Candidate

    u = np.zeros(NUM_KEYPOINTS)
    u[list(SPINE_IDS)] = 0.5
    bare = Candidate(1, 0.5, u, np.ones(4))  # no keypoints: passed through unchanged
    full = Candidate(2, 0.5, u, np.ones(4), keypoints=truth(), bbox=(40.0, 40.0, 120.0, 120.0))
    out = with_estimates(store, [bare, full])
    assert out[0] is bare
    # an empty store: no pose prior, no history -> uncalibrated effort = sum of per-keypoint signal
    assert out[1].implausibility is None and out[1].expected_effort == pytest.approx(4.5)
