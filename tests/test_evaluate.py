"""OKS AP per partition on hand-made ground truth where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate import evaluate_keypoints, expected_oks, mean_expected_oks
from schemas.keypoints import BODY_IDS, NUM_KEYPOINTS, SIGMAS, SPINE_IDS

AREA = 100.0 * 200.0


def _person(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, 0] = rng.uniform(10, 110, NUM_KEYPOINTS)
    kps[:, 1] = rng.uniform(10, 210, NUM_KEYPOINTS)
    kps[:, 2] = 2
    return kps


def _dataset(people: list[np.ndarray]) -> dict:
    return {
        "images": [{"id": i + 1, "width": 200, "height": 300} for i in range(len(people))],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "keypoints": p.ravel().tolist(), "bbox": [10, 10, 100, 200],
             "area": AREA, "iscrowd": 0, "category_id": 1}
            for i, p in enumerate(people)
        ],
    }


def _preds(people: list[np.ndarray]) -> list[dict]:
    return [{"image_id": i + 1, "keypoints": p.ravel().tolist(), "score": 1.0} for i, p in enumerate(people)]


def _shift_for_oks(target: float) -> np.ndarray:
    """Per-keypoint x offsets that give every keypoint exactly OKS term `target`."""
    k = 2.0 * np.asarray(SIGMAS)
    return k * math.sqrt(AREA) * math.sqrt(-2.0 * math.log(target))


def test_perfect_predictions_score_one_in_every_partition() -> None:
    people = [_person(s) for s in range(4)]
    metrics = evaluate_keypoints(_dataset(people), _preds(people))
    assert set(metrics) == {"all", "body", "feet", "spine"}
    for m in metrics.values():
        assert pytest.approx(1.0) == m.AP
        assert pytest.approx(1.0) == m.AR
        assert m.num_gt == 4


def test_oks_of_062_matches_three_of_ten_thresholds() -> None:
    gt = _person(1)
    pred = gt.copy()
    pred[:, 0] += _shift_for_oks(0.62)
    assert expected_oks(pred, gt, area=AREA) == pytest.approx(0.62)
    m = evaluate_keypoints(_dataset([gt]), _preds([pred]))["all"]
    assert pytest.approx(0.3) == m.AP  # matched at OKS 0.50, 0.55, 0.60 only
    assert pytest.approx(1.0) == m.AP50
    assert pytest.approx(0.0) == m.AP75


def test_partitions_are_scored_separately() -> None:
    gt = _person(2)
    pred = gt.copy()
    pred[list(BODY_IDS), 0] += 500.0  # body far off, spine exact
    metrics = evaluate_keypoints(_dataset([gt]), _preds([pred]))
    assert pytest.approx(1.0) == metrics["spine"].AP
    assert pytest.approx(0.0) == metrics["body"].AP
    assert 0.0 < metrics["all"].AP < 1.0


def test_partition_without_labelled_keypoints_is_ignored() -> None:
    gt = _person(3)
    gt[list(SPINE_IDS)] = 0.0  # no spine labels: nothing to score there
    metrics = evaluate_keypoints(_dataset([gt]), _preds([_person(3)]))
    assert metrics["spine"].num_gt == 0
    assert metrics["spine"].AP == -1.0
    assert pytest.approx(1.0) == metrics["body"].AP


def test_missing_predictions_score_zero() -> None:
    people = [_person(s) for s in range(2)]
    m = evaluate_keypoints(_dataset(people), _preds(people[:1]))["all"]
    assert pytest.approx(0.5) == m.AR
    assert evaluate_keypoints(_dataset(people), [])["all"].AP == 0.0


def test_expected_oks_by_hand() -> None:
    gt = np.zeros((NUM_KEYPOINTS, 3))
    gt[0] = [50.0, 50.0, 2]  # only the nose is labelled
    pred = np.zeros((NUM_KEYPOINTS, 2))
    pred[0] = [53.0, 54.0]  # 5 px away
    area = 400.0
    k = 2 * SIGMAS[0]
    assert expected_oks(pred, gt, area=area) == pytest.approx(math.exp(-25.0 / (2 * k * k * area)))
    assert math.isnan(expected_oks(pred, gt, area=area, ids=SPINE_IDS))
    flat = np.concatenate([pred, np.ones((NUM_KEYPOINTS, 1))], 1).ravel().tolist()
    assert expected_oks(flat, gt.ravel().tolist(), area=area) == expected_oks(pred, gt, area=area)
    assert mean_expected_oks([(gt, gt, area), (pred, gt, area)]) == pytest.approx(
        (1.0 + expected_oks(pred, gt, area=area)) / 2
    )


def test_wrong_keypoint_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="37 keypoints"):
        expected_oks(np.zeros((17, 2)), np.zeros((17, 3)), area=1.0)


def test_oks_is_cocoeval_compute_oks() -> None:
    """The one OKS formula agrees with xtcocotools' COCOeval.computeOks (SpineTrack sigmas, area)."""
    import contextlib
    import io

    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    from annotation.labelstudio.agreement import oks as agreement_oks

    rng = np.random.default_rng(7)
    gts, preds = [], []
    for seed in range(5):
        gt = _person(10 + seed)
        gt[rng.random(NUM_KEYPOINTS) < 0.3, 2] = 0  # some keypoints unlabelled
        gt[rng.random(NUM_KEYPOINTS) < 0.3, 2] = 1  # some occluded (still scored)
        pred = gt.copy()
        pred[:, :2] += rng.normal(0, 4.0 + seed, (NUM_KEYPOINTS, 2))
        pred[:, 2] = 2
        gts.append(gt)
        preds.append(pred)
    coco = COCO()
    coco.dataset = {**_dataset(gts), "categories": [{"id": 1, "name": "person"}]}
    for ann, gt in zip(coco.dataset["annotations"], gts, strict=True):
        ann["num_keypoints"] = int((gt[:, 2] > 0).sum())
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes([{**p, "category_id": 1} for p in _preds(preds)])
        ev = COCOeval(coco, dets, "keypoints", np.asarray(SIGMAS), use_area=True)
        ev.evaluate()
    for n, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
        theirs = float(np.asarray(ev.ious[(n + 1, 1)]).item())
        assert expected_oks(pred, gt, area=AREA) == pytest.approx(theirs, rel=1e-12)
        # annotator agreement is the same OKS where both annotators labelled every point
        both = gt.copy()
        both[:, 2] = 2
        assert agreement_oks(pred.ravel().tolist(), both.ravel().tolist(), AREA) == pytest.approx(
            expected_oks(pred, both, area=AREA), rel=1e-12)
