"""A model or an annotator scored on validation instances: AP per partition, and per instance OKS +
uncertainty (what auto-accept's threshold is calibrated on).

One scoring path (`_score`) for both proposers, which differ only in how they propose and how they
score their own uncertainty:

- `validate(store, model)`: a trained mmpose model, with flip test (`pipeline.model.predict`),
  uncertainty as `pipeline.active_learning.uncertainty.instance_uncertainty` computes it for the model;
- `validate_annotator(store, annotator, ids)`: any `Annotator`, scored the way `pseudo_label`
  would store its proposals (`revision_content`: v=0 where nothing was placed;
  `pose_uncertainty`), so `step_calibrate` calibrates the threshold on the same scale that
  auto-accept later compares pseudo-labels with.

Ground truth: `Store.ground_truth` (latest live accepted label, else the hidden import), boxes
from it. Instances: `pipeline.instance_sets`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.annotators.base import Annotator
from pipeline.coco_writer import coco_annotation, coco_dataset, coco_image, coco_result
from pipeline.instance_sets import ground_truth, validation_instances
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.active_learning.uncertainty import SpineStats
    from pipeline.store.models import Revision


@dataclass
class ValidationResult:
    metrics: dict[str, float]
    oks: list[float]
    uncertainty: list[float]


@dataclass(frozen=True)
class _Row:
    instance_id: int
    image_id: int
    path: str
    width: int
    height: int


@dataclass(frozen=True)
class _Proposal:
    row: int  # index into the rows proposed for
    keypoints: list[float]  # 37 COCO triplets
    score: float
    uncertainty: Callable[[list[float]], float]  # of the reference box; computed only when scored


#: One box per image row (the reference box).
Boxes = list[list[list[float]]]
Proposer = Callable[[list[_Row], Boxes, "SpineStats | None"], Iterable[_Proposal]]


def _score(store: Store, instance_ids: Sequence[int], propose: Proposer) -> ValidationResult:
    from pipeline.active_learning.pseudo_label import spine_stats
    from pipeline.evaluate import evaluate_keypoints, expected_oks, summary

    truth: dict[int, Revision] = ground_truth(store, list(instance_ids))
    if not truth:
        return ValidationResult({}, [], [])
    rows = [_Row(iid, img.id, img.path, img.width, img.height)
            for iid, img in sorted(store.images_of(truth).items())]
    stats = spine_stats(store)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    oks: list[float] = []
    unc: list[float] = []
    seen_images: set[int] = set()
    for proposal in propose(rows, [[truth[r.instance_id].bbox] for r in rows], stats):
        row = rows[proposal.row]
        ref = truth[row.instance_id]
        if row.image_id not in seen_images:
            seen_images.add(row.image_id)
            images.append(coco_image(row.image_id, str(row.image_id), row.width, row.height))
        annotations.append(coco_annotation(row.instance_id, row.image_id, ref.keypoints, ref.bbox,
                                           area=ref.area))
        results.append(coco_result(row.image_id, proposal.keypoints, proposal.score))
        value = expected_oks(proposal.keypoints, ref.keypoints, area=ref.area)
        if not math.isnan(value):
            oks.append(float(value))
            unc.append(float(proposal.uncertainty(ref.bbox)))
    metrics = summary(evaluate_keypoints(coco_dataset(images, annotations), results))
    metrics["mean_oks"] = float(np.mean(oks)) if oks else float("nan")
    metrics["instances"] = float(len(truth))
    return ValidationResult(metrics, oks, unc)


def truth_fingerprint(store: Store, instance_ids: Sequence[int]) -> str:
    """A content id of the reference labels of `instance_ids`: equal ids mean the same truth, so a
    model's metrics on them can be reused (a late human correction of a validation instance
    changes it)."""
    truth = ground_truth(store, list(instance_ids))
    digest = hashlib.sha256()
    for iid in sorted(truth):
        digest.update(f"{iid}:{truth[iid].id};".encode())
    return digest.hexdigest()[:16]


def validate(store: Store, model: Any, *, flip_test: bool = True,
             instance_ids: Sequence[int] | None = None, runner: Any = None) -> ValidationResult:
    """Predict validation instances (default: all, `validation_instances`) with a trained model; AP
    per partition, and OKS + uncertainty per instance. `runner`: `pipeline.model.predict`'s (torch
    by default; `scoring_runner` picks onnxruntime on CPU, as the round's annotator does)."""
    from pipeline.active_learning.uncertainty import instance_uncertainty
    from pipeline.model.predict import predict

    def propose(rows: list[_Row], boxes: Boxes, stats: SpineStats | None) -> Iterable[_Proposal]:
        for pred in predict(model, [r.path for r in rows], boxes, flip_test=flip_test, runner=runner):
            def uncertainty(box: list[float], pred: Any = pred) -> float:
                return float(instance_uncertainty(pred.plain_keypoints if flip_test else pred.keypoints,
                                                  pred.confidence, box, flip_keypoints=pred.flip_keypoints,
                                                  stats=stats).combined)

            yield _Proposal(pred.image_index, pred.coco_keypoints(), pred.score, uncertainty)

    ids = validation_instances(store) if instance_ids is None else list(instance_ids)
    return _score(store, ids, propose)


def scoring_runner(model: Any, device: str) -> Any:
    """How a round scores a registered model: onnxruntime on CPU (about twice torch's speed for
    blaze37, equal within 1.3e-3 px: tests/test_blaze37.py), as its annotator pseudo-labels with it;
    torch on a GPU."""
    from pipeline.model.predict import onnx_runner

    return onnx_runner(model) if device == "cpu" else None


def validate_annotator(store: Store, annotator: Annotator, instance_ids: Sequence[int]) -> ValidationResult:
    """AP per partition, and per instance OKS + uncertainty, of `annotator` on `instance_ids`
    (ground-truth boxes), its proposals written and scored as `pseudo_label` stores them."""
    from pipeline.active_learning.pseudo_label import pose_uncertainty, revision_content

    def propose(rows: list[_Row], boxes: Boxes, stats: SpineStats | None) -> Iterable[_Proposal]:
        for pose in annotator.predict_many([r.path for r in rows], boxes):
            row = rows[pose.image_index]
            keypoints, _quality = revision_content(pose, row.width, row.height)

            def uncertainty(box: list[float], pose: Any = pose) -> float:
                return float(pose_uncertainty(pose, box, stats).combined)

            yield _Proposal(pose.image_index, keypoints, pose.score, uncertainty)

    return _score(store, instance_ids, propose)
