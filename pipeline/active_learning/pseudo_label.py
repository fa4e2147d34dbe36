"""Pseudo-labelling: an annotator's proposal for every instance nobody has labelled yet.

Each proposal is stored as a `pseudo` revision with accepted=False: a suggestion for annotators
(Label Studio pre-annotation) and the uncertainty that selection ranks by; never a label. The
annotator is any `pipeline.annotators.Annotator` (a registered model, an ONNX or mmpose file,
BlazePose, the combined default); its identity goes into every revision. Honest labels: a point
the annotator does not cover, or that falls outside the image, is stored with v=0 (and so is never
pre-annotated in Label Studio nor released as labelled); a covered point whose confidence is
below `LOW_CONFIDENCE` keeps v=2 and is listed in `quality["low_confidence"]`. Its
external id `pseudo:{annotator version}:{instance}` makes a re-run (or a resumed crash) skip what is already
there, and revisions are written per chunk so a crash loses at most one chunk of work.

Boxes: the instance's own box (`Instance.meta["bbox"]`, set by import), else the box of its
latest revision of any kind, else the instance is skipped and counted.

Complete, don't redo: a person whose label a human left partial (an imported COCO person has 17
body points and no spine; `Store.incomplete_instances`) gets a proposal for the missing points
only. The annotator's pose is completed around the person's points (`complete_pose`: the combined
annotator's spine prior runs from the person's body points), the person's points go into the
revision exactly as stored (`point_sources` says `human` there, `pseudo` where the model placed a
point), and the uncertainty counts the model's points only. Its external id names the human
revision it completes (`pseudo:{version}:{instance}:human-{revision}`), so new human points get
a new proposal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pipeline import progress
from pipeline.active_learning.uncertainty import SpineStats, Uncertainty, instance_uncertainty
from pipeline.annotators.base import LOW_CONFIDENCE, Annotator, PersonPose, complete_pose
from pipeline.store import Store
from pipeline.store.models import Revision
from pipeline.store.store import HumanPoints
from schemas.enums import HIDDEN_TRUTH_SOURCES, RevisionSource
from schemas.keypoints import NUM_KEYPOINTS
from schemas.point_sources import NONE

STATS_FILE = Path("stats") / "spine_stats.json"


@dataclass
class PseudoLabelSummary:
    model_version: str
    candidates: int = 0
    written: int = 0
    already_done: int = 0
    without_box: int = 0
    mean_uncertainty: float | None = None
    revision_ids: list[int] = field(default_factory=list)


def external_id(model_version: str, instance_id: int, completes: int | None = None) -> str:
    """A proposal's external id; `completes`: the human revision whose points it completes."""
    tail = "" if completes is None else f":human-{completes}"
    return f"pseudo:{model_version}:{instance_id}{tail}"


def spine_stats(store: Store, *, min_instances: int = 20) -> SpineStats | None:
    """Spine-chain statistics fitted from the store's synthetic ground truth, saved as JSON under
    $SPINETRACK_HOME/stats; the saved file is used when the store has too few synthetic labels."""
    path = store.home / STATS_FILE
    labels = store.current_labels(image_source="synthetic", revision_sources=("synthetic",))
    if len(labels) >= min_instances:
        try:
            stats = SpineStats.fit(lab.keypoints for lab in labels)
        except ValueError:
            stats = None
        if stats is not None and stats.count >= min_instances:
            stats.save(path)
            return stats
    return SpineStats.load(path) if path.is_file() else None


def _done(store: Store, model_version: str, instance_ids: Sequence[int],
          given: dict[int, HumanPoints]) -> set[int]:
    wanted = {external_id(model_version, i, given[i].revision_id if i in given else None): i
              for i in instance_ids}
    return {wanted[k] for k in store.stored_external_ids(wanted)}


def as_annotator(model: Annotator | nn.Module, model_version: str | None, flip_test: bool,
                 batch_size: int) -> Annotator:
    """An annotator as is; a bare mmpose model (the API before annotators) wrapped as one, named
    `model_version`, so its revisions keep the external ids `pseudo:{model_version}:{instance}`."""
    if isinstance(model, nn.Module):
        from pipeline.annotators.registered import in_memory_annotator

        if not model_version:
            raise ValueError("pseudo-labelling with a bare model needs its model_version")
        return in_memory_annotator(model, model_version, flip_test=flip_test, batch_size=batch_size)
    return model


def pose_uncertainty(pose: PersonPose, box: Sequence[float], stats: SpineStats | None,
                     points: np.ndarray | None = None) -> Uncertainty:
    """The uncertainty stored with a pseudo-label (calibrated against in
    pipeline.active_learning.validation); `points`: the ones that count (a completion: those the
    model placed)."""
    plain = pose.detail.get("plain_keypoints", pose.keypoints)
    return instance_uncertainty(
        plain if pose.flip_keypoints is not None else pose.keypoints,
        pose.confidence,
        box,
        flip_keypoints=pose.flip_keypoints,
        stats=stats,
        points=points,
    )


def completed(annotator: Annotator, pose: PersonPose, people: HumanPoints | None,
              ) -> tuple[PersonPose, np.ndarray | None]:
    """The pose completed around a person's points, and the points left to the model (None:
    all, nobody placed any)."""
    if people is None:
        return pose, None
    placed = np.asarray(people.placed, dtype=bool)
    xy = np.asarray(people.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)[:, :2]
    return complete_pose(annotator, pose, xy, placed), ~placed


def with_people(keypoints: list[float], people: HumanPoints | None) -> tuple[list[float], list[str] | None]:
    """A proposal's keypoints with the person's points as stored, to the bit, and who placed each
    point (None without a person's points)."""
    if people is None:
        return keypoints, None
    out = list(keypoints)
    sources: list[str] = []
    for i, placed in enumerate(people.placed):
        if placed:
            out[3 * i:3 * i + 3] = people.keypoints[3 * i:3 * i + 3]
            sources.append(RevisionSource.HUMAN)
        else:
            sources.append(RevisionSource.PSEUDO if out[3 * i + 2] > 0 else NONE)
    return out, [str(v) for v in sources]


def revision_content(pose: PersonPose, width: int, height: int) -> tuple[list[float], dict[str, Any]]:
    """A pose as stored: keypoints with v=0 where the annotator placed nothing or the point falls
    outside the image, and the per-point bookkeeping (origin, low-confidence, uncovered) for
    `quality`. docs/pseudo-labelling.md has the rule."""
    inside = pose.inside(width, height)
    keypoints = pose.coco_keypoints(width, height)
    quality: dict[str, Any] = {
        "origin": list(pose.origin),
        "uncovered": [int(i) for i in np.flatnonzero(~pose.covered)],
        "outside_image": [int(i) for i in np.flatnonzero(pose.covered & ~inside)],
        "low_confidence": [i for i in pose.low_confidence() if inside[i]],
        "low_confidence_threshold": LOW_CONFIDENCE,
    }
    return keypoints, quality


def pseudo_label(
    store: Store,
    annotator: Annotator | nn.Module,
    model_version: str | None = None,
    *,
    image_source: str | None = None,
    instance_ids: Sequence[int] | None = None,
    batch_size: int = 32,
    flip_test: bool = True,
    stats: SpineStats | None = None,
    chunk: int = 256,
    round: int | None = None,
) -> PseudoLabelSummary:
    """Predict and store a `pseudo` revision (accepted=False) for every unlabelled instance.

    `annotator` is an `Annotator` (pipeline.annotators.load_annotator) or, as before annotators
    existed, an mmpose model with its `model_version` (then `flip_test`/`batch_size` apply).
    Revisions record `annotator.identity.version` as model_version and the full identity in
    provenance. `image_source` ("real", "synthetic") and `instance_ids` narrow the pool; instances
    this annotator already pseudo-labelled are skipped. Uncertainty parts go to
    `quality["uncertainty_parts"]`, pooled features (when the annotator has them) to
    `quality["features"]`, per-point origin / uncovered / low-confidence ids to `quality`.
    """
    ann = as_annotator(annotator, model_version, flip_test, batch_size)
    version = ann.identity.version
    pairs = store.unlabelled_instances(image_source=image_source, incomplete=True)
    if instance_ids is not None:
        wanted = set(instance_ids)
        pairs = [p for p in pairs if p[1].id in wanted]
    summary = PseudoLabelSummary(version, candidates=len(pairs))
    given = store.human_points([inst.id for _, inst in pairs])
    done = _done(store, version, [inst.id for _, inst in pairs], given)
    summary.already_done = len(done)
    pairs = [p for p in pairs if p[1].id not in done]
    boxes = store.instance_boxes([inst for _, inst in pairs])
    summary.without_box = sum(1 for _, inst in pairs if inst.id not in boxes)
    pairs = [p for p in pairs if p[1].id in boxes]
    if stats is None:
        stats = spine_stats(store)
    identity = ann.identity.as_json()

    uncertainties: list[float] = []
    for start in progress.track(range(0, len(pairs), chunk), f"pseudo-label ({chunk} per batch)"):
        part = pairs[start : start + chunk]
        poses = ann.predict_many([img.path for img, _ in part], [[boxes[inst.id][0]] for _, inst in part])
        for raw in poses:
            img, inst = part[raw.image_index]
            box, box_source = boxes[inst.id]
            people = given.get(inst.id)
            pose, model_points = completed(ann, raw, people)
            keypoints, point_quality = revision_content(pose, img.width, img.height)
            keypoints, point_sources = with_people(keypoints, people)
            unc = pose_uncertainty(pose, box, stats, model_points)
            quality: dict[str, Any] = {"uncertainty_parts": unc.as_json(), **point_quality}
            if people is not None:
                quality["human_points"] = people.ids
            if pose.raw_scores is not None:
                quality["raw_scores"] = [round_(v) for v in pose.raw_scores]
            if pose.features is not None:
                quality["features"] = [round_(v) for v in pose.features]
            rev = store.add_revision(
                inst.id,
                keypoints,
                box,
                source=RevisionSource.PSEUDO,
                accepted=False,
                model_version=version,
                round=round,
                scores=[float(v) for v in pose.confidence],
                uncertainty=unc.combined,
                quality=quality,
                provenance={"box_source": box_source, "flip_test": pose.flip_keypoints is not None,
                            "annotator": identity,
                            **({"completes": people.revision_id} if people is not None else {})},
                external_id=external_id(version, inst.id, people.revision_id if people else None),
                point_sources=point_sources,
            )
            if rev is not None:
                summary.written += 1
                summary.revision_ids.append(rev)
                uncertainties.append(unc.combined)
    if uncertainties:
        summary.mean_uncertainty = float(np.mean(uncertainties))
    return summary


def round_(value: Any, digits: int = 5) -> float:
    return round(float(value), digits)


@dataclass
class PseudoLabelQuality:
    """Pseudo-labels scored against hidden ground truth (synthetic or imported keypoints)."""

    model_version: str
    count: int
    mean_oks: float
    by_partition: dict[str, float]
    spearman_uncertainty_error: float  # rank correlation of uncertainty with 1 - OKS
    ap: dict[str, float] = field(default_factory=dict)  # COCO OKS AP/AR per partition ({part}_AP)


def pseudo_label_quality(store: Store, model_version: str) -> PseudoLabelQuality:
    """Mean expected OKS and COCO AP of a model's pseudo-labels on the instances that have ground
    truth (ground-truth boxes, one prediction per person, as SpineTrack validation is run)."""
    from pipeline.active_learning.uncertainty import spearman
    from pipeline.coco_writer import coco_annotation, coco_dataset, coco_image, coco_result
    from pipeline.evaluate import evaluate_keypoints, expected_oks, summary
    from schemas.keypoints import PARTITIONS

    pseudo = {r.instance_id: r
              for r in store.revisions_for(sources=[RevisionSource.PSEUDO], model_version=model_version)}
    truth: dict[int, Revision] = {}
    image_of: dict[int, int] = {}
    if pseudo:
        for r in store.revisions_for(pseudo, sources=HIDDEN_TRUTH_SOURCES):  # by id: latest wins
            truth[r.instance_id] = r
        image_of = {inst_id: img.id for inst_id, img in store.images_of(truth).items()}
    oks: dict[str, list[float]] = {name: [] for name in PARTITIONS}
    unc: list[float] = []
    err: list[float] = []
    for inst_id, gt in truth.items():
        pred = pseudo[inst_id]
        for name, ids in PARTITIONS.items():
            value = expected_oks(pred.keypoints, gt.keypoints, area=gt.area, ids=ids)
            if not math.isnan(value):
                oks[name].append(value)
                if name == "all" and pred.uncertainty is not None:
                    unc.append(pred.uncertainty)
                    err.append(1.0 - value)
    means = {name: float(np.mean(v)) if v else math.nan for name, v in oks.items()}
    gt_coco = coco_dataset(
        [coco_image(i, str(i), None, None) for i in sorted(set(image_of.values()))],
        [coco_annotation(n + 1, image_of[i], gt.keypoints, gt.bbox, area=gt.area)
         for n, (i, gt) in enumerate(truth.items())],
    )
    results = [coco_result(image_of[i], pseudo[i].keypoints, float(np.mean(pseudo[i].scores or [1.0])))
               for i in truth]
    ap = summary(evaluate_keypoints(gt_coco, results)) if truth else {}
    return PseudoLabelQuality(
        model_version=model_version,
        count=len(oks["all"]),
        mean_oks=means["all"],
        by_partition=means,
        spearman_uncertainty_error=spearman(unc, err) if len(unc) > 2 else math.nan,
        ap=ap,
    )
