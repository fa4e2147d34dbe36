"""Keypoint accuracy the way the SpineTrack paper reports it: COCO OKS AP/AR per keypoint partition.

AP comes from xtcocotools' COCOeval with the SpineTrack sigmas. A partition (body, feet, spine) is
scored on its own: ground truth and predictions are cut down to that partition's keypoints and its
sigmas, so an instance with no labelled keypoint in the partition is ignored there, exactly as COCO
ignores a person with no labelled keypoint (mmpose's KeypointPartitionMetric does the same).

`expected_oks` is the per-instance OKS of a prediction against ground truth: the number an
uncertainty score should predict, and what pseudo-label quality is reported as.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.coco_writer import coco_annotation, coco_dataset, coco_image, coco_result
from schemas.keypoint_array import KeypointArray
from schemas.keypoints import NUM_KEYPOINTS, PARTITIONS, SIGMAS, coco_category

_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass(frozen=True)
class PartitionMetrics:
    """COCOeval's keypoint summary for one partition; -1 where COCO has nothing to score."""

    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    AR50: float
    AR75: float
    ARm: float
    ARl: float
    num_gt: int
    num_pred: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _as_keypoints(values: ArrayLike) -> NDArray[np.float64]:
    """(37, 2|3) array from a flat list of triplets or an array; missing visibility means visible."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 3)
    if arr.shape[0] != NUM_KEYPOINTS or arr.shape[1] not in (2, 3):
        raise ValueError(f"expected {NUM_KEYPOINTS} keypoints as (x, y[, v]), got shape {arr.shape}")
    return arr


def oks_terms(a: ArrayLike, b: ArrayLike, *, area: float) -> NDArray[np.float64]:
    """Per-keypoint OKS term exp(-d^2 / (2 area (2 sigma)^2)) between two poses of one person.

    The one place the formula is written: COCOeval's computeOks (xtcocotools, checked against it
    in tests/test_evaluate.py) with the SpineTrack sigmas; visibility is the caller's business.
    """
    p, g = _as_keypoints(a), _as_keypoints(b)
    variances = (2.0 * np.asarray(SIGMAS)) ** 2
    d2 = ((p[:, :2] - g[:, :2]) ** 2).sum(axis=1)
    return np.exp(-d2 / variances / (float(area) + np.spacing(1)) / 2.0)


def expected_oks(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    area: float,
    ids: Sequence[int] | None = None,
) -> float:
    """OKS of one predicted instance against its ground truth (COCO's formula, SpineTrack sigmas).

    `pred` and `gt` are 37 keypoints as (x, y[, v]) or flat triplets; only ground-truth keypoints
    with v > 0 (and in `ids`, if given) count. `area` is the ground-truth area, as in COCO.
    Returns NaN when no keypoint counts: such an instance says nothing about accuracy.
    """
    g = _as_keypoints(gt)
    select = np.zeros(NUM_KEYPOINTS, dtype=bool)
    select[list(ids) if ids is not None else slice(None)] = True
    visible = g[:, 2] > 0 if g.shape[1] == 3 else np.ones(NUM_KEYPOINTS, dtype=bool)
    mask = select & visible
    if not mask.any():
        return math.nan
    return float(oks_terms(pred, g, area=area)[mask].mean())


def mean_expected_oks(
    pairs: Sequence[tuple[ArrayLike, ArrayLike, float]], ids: Sequence[int] | None = None
) -> float:
    """Mean OKS over (pred, gt, area) triples, skipping instances with nothing to score."""
    values = [expected_oks(p, g, area=a, ids=ids) for p, g, a in pairs]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _subset(keypoints: Sequence[float], ids: Sequence[int]) -> NDArray[np.float64]:
    """The (len(ids), 3) rows of a partition."""
    return KeypointArray.from_flat(keypoints).data[list(ids)]


def _coco(dataset: Mapping[str, Any]) -> Any:
    from xtcocotools.coco import COCO

    coco = COCO()
    coco.dataset = copy.deepcopy(dict(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _partition_ap(
    gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], ids: Sequence[int]
) -> PartitionMetrics:
    from xtcocotools.cocoeval import COCOeval

    gt_anns = [
        {
            **coco_annotation(ann["id"], ann["image_id"], _subset(ann["keypoints"], ids), ann["bbox"],
                              area=float(ann.get("area") or ann["bbox"][2] * ann["bbox"][3]),
                              category_id=int(ann.get("category_id", 1))),
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        for ann in gt["annotations"]
    ]
    gt_subset = coco_dataset(
        [coco_image(im["id"], str(im.get("file_name", im["id"])), im.get("width"), im.get("height"))
         for im in gt["images"]],
        gt_anns,
        categories=[coco_category(ids)],
    )
    num_gt = sum(1 for a in gt_anns if a["num_keypoints"] > 0 and not a["iscrowd"])
    # COCOeval drops a detection whose visibility entries are all 0; predictions are scored by
    # position only, so every predicted keypoint is marked present.
    dts = [
        {**coco_result(pred["image_id"], _subset(pred["keypoints"], ids), float(pred.get("score", 1.0)),
                       category_id=int(pred.get("category_id", 1)), all_present=True), "id": n + 1}
        for n, pred in enumerate(predictions)
    ]
    if num_gt == 0 or not dts:
        empty = 0.0 if num_gt else -1.0
        return PartitionMetrics(**dict.fromkeys(_STAT_NAMES, empty), num_gt=num_gt, num_pred=len(dts))
    coco_gt = _coco(gt_subset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dts)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints", np.asarray([SIGMAS[i] for i in ids]),
                             use_area=True)
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(_STAT_NAMES, evaluator.stats, strict=False)}
    return PartitionMetrics(**stats, num_gt=num_gt, num_pred=len(dts))


def evaluate_keypoints(
    gt: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    partitions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, PartitionMetrics]:
    """OKS AP/AR of `predictions` against the COCO ground truth `gt`, per partition.

    `gt` is a COCO keypoint dict (images, annotations with 37 triplets, bbox, area);
    `predictions` are COCO results: image_id, keypoints (37 triplets), score.
    Partitions default to schemas.keypoints.PARTITIONS (all, body, feet, spine).
    """
    parts = PARTITIONS if partitions is None else partitions
    return {name: _partition_ap(gt, predictions, ids) for name, ids in parts.items()}


def summary(metrics: Mapping[str, PartitionMetrics]) -> dict[str, float]:
    """Flat `{partition}_AP` / `{partition}_AR` numbers, for model metrics and reports."""
    out: dict[str, float] = {}
    for name, m in metrics.items():
        out[f"{name}_AP"] = m.AP
        out[f"{name}_AR"] = m.AR
    return out
