"""What every neural annotator is: (image, person boxes) -> SpineTrack keypoints it really covers.

An annotator knows which of the 37 points it places (`covers`), returns a confidence in [0, 1] for
each, records for each point which annotator placed it (`origin`, so a combined annotator's output
can be traced point by point) and has an identity (a name and the sha256 of its weights) that goes
into every revision it writes. Points it does not cover are never invented: they come back with
origin "" and confidence 0, and `coco_keypoints` writes them as v=0.

Images are BGR uint8 arrays (as cv2 reads them) or paths; boxes are (x, y, w, h) pixels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from schemas.keypoints import NAMES, NUM_KEYPOINTS

ImageInput = NDArray[np.uint8] | str | Path

#: A covered point whose confidence is below this is marked `low_confidence` in the revision's
#: quality (it keeps v=2: it is a guess to check, not an occluded point). docs/annotators.md.
LOW_CONFIDENCE = 0.3


@dataclass(frozen=True)
class AnnotatorIdentity:
    """Who produced a pose: stored with every revision (`model_version` and `provenance`)."""

    name: str  # stable, human-readable: "blazepose-full", "model:tiny-...", "onnx:spinepose-s"
    sha256: str  # of the weights file(s); a combined annotator hashes its parts' identities
    kind: str  # "model" | "onnx" | "mmpose" | "blazepose" | "spine-prior" | "combined"
    parts: tuple[AnnotatorIdentity, ...] = ()

    @property
    def version(self) -> str:
        """What revisions record as `model_version`: the name, unless the name alone could be
        reused for other weights (files on disk), then name@sha256 prefix."""
        if self.kind == "model":
            return self.name.removeprefix("model:")  # registry names are unique and immutable
        return f"{self.name}@{self.sha256[:12]}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "kind": self.kind}
        if self.parts:
            out["parts"] = [p.as_json() for p in self.parts]
        return out


def combined_sha256(parts: Sequence[AnnotatorIdentity], extra: dict[str, Any] | None = None) -> str:
    payload = json.dumps({"parts": [p.as_json() for p in parts], "extra": extra or {}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class PersonPose:
    """One person's 37 keypoints from an annotator, in image pixels.

    `covered[i]` is False where the annotator placed nothing (keypoints there are 0 and mean
    nothing); `origin[i]` names the annotator that placed point i ("" when not covered).
    `flip_keypoints` is the mirrored-crop prediction mapped back, when the annotator ran a flip
    test (uncertainty uses it); `features` a pooled feature vector for diversity, when it has one.
    """

    keypoints: NDArray[np.float64]  # (37, 2)
    confidence: NDArray[np.float64]  # (37,) in [0, 1]
    covered: NDArray[np.bool_]  # (37,)
    origin: list[str]
    bbox: NDArray[np.float64]  # (4,) x, y, w, h
    image_index: int = 0
    box_index: int = 0
    raw_scores: NDArray[np.float64] | None = None  # the model's own score scale, when it differs
    flip_keypoints: NDArray[np.float64] | None = None
    features: NDArray[np.float32] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def inside(self, width: int, height: int) -> NDArray[np.bool_]:
        """Covered points that fall inside the image (a point outside it cannot be labelled)."""
        x, y = self.keypoints[:, 0], self.keypoints[:, 1]
        finite = np.isfinite(x) & np.isfinite(y)
        return self.covered & finite & (x >= 0) & (y >= 0) & (x < width) & (y < height)

    def coco_keypoints(self, width: int | None = None, height: int | None = None) -> list[float]:
        """Flat (x, y, v) triplets: v=2 for a covered point (inside the image when its size is
        given), v=0 with x=y=0 for every other point."""
        keep = self.covered if width is None or height is None else self.inside(width, height)
        out = np.zeros((NUM_KEYPOINTS, 3))
        out[keep, :2] = self.keypoints[keep]
        out[keep, 2] = 2.0
        return [float(v) for v in out.ravel()]

    def low_confidence(self) -> list[int]:
        """Covered points whose confidence is below LOW_CONFIDENCE."""
        return [int(i) for i in np.flatnonzero(self.covered & (self.confidence < LOW_CONFIDENCE))]

    @property
    def score(self) -> float:
        """Instance score for COCO results: mean confidence over the covered points."""
        return float(self.confidence[self.covered].mean()) if self.covered.any() else 0.0

    def origin_summary(self) -> dict[str, list[int]]:
        """{annotator name: point ids} (uncovered points under "")."""
        out: dict[str, list[int]] = {}
        for i, name in enumerate(self.origin):
            out.setdefault(name, []).append(i)
        return out


def empty_pose(bbox: Sequence[float] | NDArray[np.float64], image_index: int = 0,
               box_index: int = 0) -> PersonPose:
    """A pose that covers nothing (the annotator found no person in the box)."""
    return PersonPose(
        keypoints=np.zeros((NUM_KEYPOINTS, 2)),
        confidence=np.zeros(NUM_KEYPOINTS),
        covered=np.zeros(NUM_KEYPOINTS, dtype=bool),
        origin=[""] * NUM_KEYPOINTS,
        bbox=np.asarray(bbox, dtype=np.float64),
        image_index=image_index,
        box_index=box_index,
    )


#: The origin of a point a person placed (an imported file, Label Studio), in a completed pose.
PERSON = "human"


def with_points(pose: PersonPose, xy: NDArray[np.float64], placed: NDArray[np.bool_]) -> PersonPose:
    """A copy of `pose` with a person's points in place of its own (confidence 1, origin `PERSON`):
    what is known is not predicted."""
    out = replace(pose, keypoints=pose.keypoints.copy(), confidence=pose.confidence.copy(),
                  covered=pose.covered.copy(), origin=list(pose.origin))
    mask = np.asarray(placed, dtype=bool)
    out.keypoints[mask] = np.asarray(xy, dtype=np.float64)[mask]
    out.confidence[mask] = 1.0
    out.covered[mask] = True
    for i in np.flatnonzero(mask):
        out.origin[int(i)] = PERSON
    return out


def complete_pose(annotator: Annotator, pose: PersonPose, xy: NDArray[np.float64],
                  placed: NDArray[np.bool_]) -> PersonPose:
    """`pose` completed around the points a person placed: by the annotator's own `complete` when
    it has one (the combined annotator places the spine from them), else with them put in place."""
    complete = getattr(annotator, "complete", None)
    if callable(complete):
        done: PersonPose = complete(pose, xy, placed)
        return done
    return with_points(pose, xy, placed)


def coverage_mask(ids: Sequence[int]) -> NDArray[np.bool_]:
    mask = np.zeros(NUM_KEYPOINTS, dtype=bool)
    mask[list(ids)] = True
    return mask


def covered_names(ids: Sequence[int]) -> list[str]:
    return [NAMES[i] for i in ids]


@runtime_checkable
class Annotator(Protocol):
    """Turns images and person boxes into `PersonPose`s."""

    identity: AnnotatorIdentity
    covers: tuple[int, ...]  # the SpineTrack point ids it can place

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        """One pose per box of one image, in box order."""
        ...

    def predict_many(
        self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Sequence[float]]]
    ) -> list[PersonPose]:
        """Poses for every box of every image (image, then box order), `image_index` set."""
        ...


class BaseAnnotator:
    """Shared plumbing: `predict_many` as a loop over `predict` (annotators that batch override it)."""

    identity: AnnotatorIdentity
    covers: tuple[int, ...]

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        raise NotImplementedError

    def predict_many(
        self, images: Sequence[ImageInput], boxes: Sequence[Sequence[Sequence[float]]]
    ) -> list[PersonPose]:
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        out: list[PersonPose] = []
        for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            if len(image_boxes) == 0:
                continue
            for j, pose in enumerate(self.predict(image, image_boxes)):
                pose.image_index, pose.box_index = i, j
                out.append(pose)
        return out

    def describe(self) -> dict[str, Any]:
        """What `spinetrack annotators` prints."""
        return {**self.identity.as_json(), "covers": covered_names(self.covers)}


def boxes_array(boxes: Sequence[Sequence[float]] | NDArray[Any]) -> NDArray[np.float64]:
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return arr
