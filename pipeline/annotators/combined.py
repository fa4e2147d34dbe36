"""The combined annotator: each point from the annotator that knows it best, its origin recorded.

body (COCO-17, heels, big toes) from a body expert: the student itself when it carries
BlazePose's network on BlazePose's crops (blaze37: as good on the COCO sample, better on OCHuman
and PoseTrack18, bench/results/student.json), else BlazePose; the 9 spine points from
the spine-from-body prior or from the student, whichever measured better: the prior
(`DEFAULT_SPINE_SOURCE`; bench/results/annotators.json `spine_sources`, docs/annotators.md: on
held-out renders the prior fed BlazePose's body points places the spine far closer than the
tiny student does, and on real photos the student's spine is not even on the person's torso);
everything else (head top, small toes, the experimental points) from the student. Where the body
expert finds no person, the student's body points are used; without a student, points only it
could give stay uncovered (v=0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.annotators.base import (
    Annotator,
    AnnotatorIdentity,
    BaseAnnotator,
    ImageInput,
    PersonPose,
    combined_sha256,
    empty_pose,
    with_points,
)
from pipeline.annotators.spine_prior import ANCHOR_IDS, INPUT_IDS, OUTPUT_IDS, PRIOR_CONFIDENCE, SpinePrior
from schemas.blazepose import BLAZEPOSE_COVERS
from schemas.keypoints import NUM_KEYPOINTS, SPINE_CHAIN

PRIOR_NAME = "spine-prior"
SPINE_SOURCES = ("prior", "student")
#: Where the combined annotator's spine comes from unless `combined:spine=student` says otherwise:
#: the source that measured better on real-like input (bench/annotators.py, `spine_sources`).
DEFAULT_SPINE_SOURCE = "prior"


class CombinedAnnotator(BaseAnnotator):
    def __init__(self, *, body: Annotator, prior: SpinePrior | None, student: Annotator | None,
                 spine: str = DEFAULT_SPINE_SOURCE, name: str = "combined") -> None:
        if spine not in SPINE_SOURCES:
            raise ValueError(f"spine must be one of {SPINE_SOURCES}, got {spine!r}")
        if spine == "prior" and prior is None:
            raise ValueError("spine='prior' needs a fitted spine prior")
        self.body, self.prior, self.student, self.spine = body, prior, student, spine
        #: the points the body role gives: the expert's own, or BlazePose's when the student is it
        self.body_ids = BLAZEPOSE_COVERS if body is student else tuple(body.covers)
        parts = [body.identity] if body is not student else []
        if prior is not None and spine == "prior":
            parts.append(AnnotatorIdentity(PRIOR_NAME, prior.sha256, "spine-prior"))
        if student is not None:
            parts.append(student.identity)
        label = "+".join(p.name for p in parts)
        self.identity = AnnotatorIdentity(f"{name}({label})", combined_sha256(parts, {"spine": spine}),
                                          "combined", tuple(parts))
        covers = set(self.body_ids)
        if student is not None:
            covers |= set(range(NUM_KEYPOINTS))
        if spine == "prior" and set(ANCHOR_IDS) <= covers | set(student.covers if student else ()):
            covers |= set(SPINE_CHAIN)
        self.covers = tuple(sorted(covers))

    def _spine_from_prior(self, pose: PersonPose) -> None:
        assert self.prior is not None
        if not pose.covered[list(ANCHOR_IDS)].all():
            return
        spine = self.prior.predict(pose.keypoints)
        known = [i for i in INPUT_IDS if pose.covered[i]]
        confidence = PRIOR_CONFIDENCE * float(np.mean(pose.confidence[known]))
        for n, idx in enumerate(OUTPUT_IDS):
            pose.keypoints[idx] = spine[n]
            pose.confidence[idx] = confidence
            pose.covered[idx] = True
            pose.origin[idx] = PRIOR_NAME

    @staticmethod
    def _take(pose: PersonPose, source: PersonPose, ids: Sequence[int]) -> None:
        for i in ids:
            if source.covered[i]:
                pose.keypoints[i] = source.keypoints[i]
                pose.confidence[i] = source.confidence[i]
                pose.covered[i] = True
                pose.origin[i] = source.origin[i]

    def merge(self, body: PersonPose, student: PersonPose | None) -> PersonPose:
        pose = empty_pose(body.bbox, body.image_index, body.box_index)
        body_ids = list(self.body_ids)
        if body.covered.any():
            self._take(pose, body, body_ids)
        elif student is not None:
            self._take(pose, student, body_ids)  # the body expert missed this person
        spine_ids = [i for i in SPINE_CHAIN if i not in body_ids]
        if self.spine == "prior":
            self._spine_from_prior(pose)
        if student is not None:
            if self.spine == "student" or not pose.covered[spine_ids].all():
                self._take(pose, student, spine_ids)
            rest = [i for i in range(NUM_KEYPOINTS) if not pose.covered[i]]
            self._take(pose, student, rest)
            pose.features = student.features
        pose.detail = {"body": body.detail, "origin": pose.origin_summary()}
        return pose

    def complete(self, pose: PersonPose, xy: np.ndarray, placed: np.ndarray) -> PersonPose:
        """`pose` around the points a person placed: theirs in place of the body expert's, and the
        spine prior run again from them (a person's hips and shoulders beat any model's)."""
        out = with_points(pose, xy, placed)
        if self.spine == "prior" and np.asarray(placed, dtype=bool)[list(ANCHOR_IDS)].any():
            self._spine_from_prior(out)
            out = with_points(out, xy, placed)  # spine points the person placed stay theirs
        out.detail = {**out.detail, "origin": out.origin_summary()}
        return out

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        return self.predict_many([image], [boxes])

    def predict_many(self, images: Sequence[ImageInput],
                     boxes: Sequence[Sequence[Sequence[float]]]) -> list[PersonPose]:
        bodies = self.body.predict_many(images, boxes)
        students: dict[tuple[int, int], PersonPose] = {}
        if self.student is not None:
            mine = bodies if self.body is self.student else self.student.predict_many(images, boxes)
            students = {(p.image_index, p.box_index): p for p in mine}
        return [self.merge(b, students.get((b.image_index, b.box_index))) for b in bodies]
