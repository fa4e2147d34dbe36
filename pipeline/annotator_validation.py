"""An annotator scored on validation instances, the way `pseudo_label` would store its proposals.

Auto-accept compares a pseudo-label's uncertainty with a threshold calibrated on the real
validation split; the threshold is only a promise if it was calibrated on the same annotator's
uncertainty, computed the same way (`pipeline.pseudo_label.pose_uncertainty`) on keypoints written
the same way (`revision_content`: v=0 where nothing was placed). This module does that for any
`Annotator`, so `step_calibrate` scores the round's annotator (the combined default), not the
student alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.annotators.base import Annotator
from pipeline.coco_writer import coco_annotation, coco_image, coco_result
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.active_learning import ValidationResult


def validate_annotator(store: Store, annotator: Annotator, instance_ids: Sequence[int]) -> ValidationResult:
    """AP per partition, and per instance OKS + uncertainty, of `annotator` on `instance_ids`
    (ground-truth boxes; ground truth as `pipeline.active_learning.ground_truth` picks it)."""
    from pipeline.active_learning import ValidationResult, ground_truth
    from pipeline.evaluate import evaluate_keypoints, expected_oks, summary
    from pipeline.pseudo_label import pose_uncertainty, revision_content, spine_stats

    truth = ground_truth(store, list(instance_ids))
    if not truth:
        return ValidationResult({}, [], [])
    rows = [(iid, img.id, img.path, img.width, img.height)
            for iid, img in sorted(store.images_of(truth).items())]
    stats = spine_stats(store)
    poses = annotator.predict_many([r[2] for r in rows], [[truth[r[0]].bbox] for r in rows])
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    results: list[dict[str, Any]] = []
    oks: list[float] = []
    unc: list[float] = []
    seen: set[int] = set()
    for pose in poses:
        inst_id, image_id, _path, width, height = rows[pose.image_index]
        ref = truth[inst_id]
        if image_id not in seen:
            seen.add(image_id)
            gt["images"].append(coco_image(image_id, str(image_id), width, height))
        gt["annotations"].append(coco_annotation(inst_id, image_id, ref.keypoints, ref.bbox, area=ref.area))
        keypoints, _quality = revision_content(pose, width, height)
        results.append(coco_result(image_id, keypoints, pose.score))
        value = expected_oks(keypoints, ref.keypoints, area=ref.area)
        if not math.isnan(value):
            oks.append(float(value))
            unc.append(float(pose_uncertainty(pose, ref.bbox, stats).combined))
    metrics = summary(evaluate_keypoints(gt, results))
    metrics["mean_oks"] = float(np.mean(oks)) if oks else float("nan")
    metrics["instances"] = float(len(truth))
    return ValidationResult(metrics, oks, unc)
