"""BlazePose as a body expert: the one pretrained human-pose model that installs offline here.

It ships inside the official `mediapipe==0.10.14` wheel (pose_detection.tflite and
pose_landmark_full.tflite; later versions dropped them and the legacy `solutions` API), installed
with --no-deps (requirements/nodeps.txt). Run per person: crop = box padded 1.25x and squared, static image
mode, model_complexity=1 (the only complexity shipped; 0 and 2 are downloaded at run time).

Only the landmarks that really are SpineTrack points are mapped (`LANDMARK_TO_SPINETRACK`): the
COCO-17 face and limb points, the heels and the big toes (BlazePose's "foot index" is the tip of
the foot, at the big toe). Head top, neck, sacrum, small toes, the spine and the experimental
points are not covered: they come back uncovered, never invented.

Misses: BlazePose's own detector, run inside the crop, finds no person in many small, dark or
painted crops and then returns nothing. `retry=True` tries again on an upscaled, contrast-
the crop with everything outside the padded box blacked out (a neighbour was detected instead),
then upscaled and contrast-equalised (bench/results/annotators.json measures what it gains).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from pipeline import noise
from pipeline.annotators.base import (
    AnnotatorIdentity,
    BaseAnnotator,
    ImageInput,
    PersonPose,
    boxes_array,
    combined_sha256,
    empty_pose,
)
from pipeline.annotators.crop import PADDING, read_image
from schemas.blazepose import BLAZEPOSE_COVERS, LANDMARK_TO_SPINETRACK
from schemas.keypoints import NUM_KEYPOINTS

MODEL_FILES = (
    "modules/pose_detection/pose_detection.tflite",
    "modules/pose_landmark/pose_landmark_full.tflite",
)
MEDIAPIPE_VERSION = "0.10.14"

#: Crops whose longer side is below this are upscaled to it before BlazePose sees them.
MIN_SIDE = 256
#: Crops are downscaled to at most this (BlazePose works at 256 px; larger only costs time).
MAX_SIDE = 1024


def mediapipe_root() -> Path | None:
    try:
        import mediapipe
    except ImportError:
        return None
    return Path(mediapipe.__file__).parent


def blazepose_status() -> dict[str, Any]:
    """Whether BlazePose can run here, and its identity (for `spinetrack annotators`)."""
    root = mediapipe_root()
    if root is None:
        return {"available": False, "reason": f"mediapipe=={MEDIAPIPE_VERSION} is not installed"}
    missing = [f for f in MODEL_FILES if not (root / f).is_file()]
    if missing:
        return {"available": False,
                "reason": f"mediapipe at {root} lacks {missing} (need {MEDIAPIPE_VERSION})"}
    identity = blazepose_identity(root)
    return {"available": True, "name": identity.name, "sha256": identity.sha256}


def blazepose_identity(root: Path) -> AnnotatorIdentity:
    from pipeline.store.store import file_sha256

    parts = tuple(AnnotatorIdentity(Path(f).stem, file_sha256(root / f), "tflite") for f in MODEL_FILES)
    return AnnotatorIdentity("blazepose-full", combined_sha256(parts), "blazepose")


def _enhance(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Contrast-limited histogram equalisation of the lightness (dark and low-contrast people)."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4))
    lab[..., 0] = clahe.apply(lab[..., 0])
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), dtype=np.uint8)


class BlazePoseAnnotator(BaseAnnotator):
    """BlazePose full (mediapipe 0.10.14) on each person crop."""

    def __init__(self, *, retry: bool = True, min_side: int = MIN_SIDE, padding: float = PADDING,
                 min_detection_confidence: float = 0.5) -> None:
        root = mediapipe_root()
        status = blazepose_status()
        if root is None or not status["available"]:
            raise RuntimeError(f"BlazePose is not available: {status.get('reason')}")
        noise.quiet_warnings("mediapipe")
        import mediapipe as mp

        # TFLite and absl log from C++ threads while the graph starts (pipeline/noise.py): it is
        # started here, on a blank image (static image mode keeps nothing from one image to the next)
        with noise.quiet_native_stderr("mediapipe"):
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
            )
            self._pose.process(np.zeros((64, 64, 3), dtype=np.uint8))
        self._lock = threading.Lock()  # a mediapipe graph runs one image at a time
        self.retry = retry
        self.min_side = min_side
        self.padding = padding
        self.identity = blazepose_identity(root)
        self.covers = BLAZEPOSE_COVERS
        self.stats = {"persons": 0, "found_first_try": 0, "found_on_retry": 0, "missed": 0}

    def close(self) -> None:
        self._pose.close()

    def _crop(self, image: NDArray[np.uint8], box: NDArray[np.float64], padding: float,
              min_side: int, masked: bool = False) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
        """The padded box, squared, resampled to a size BlazePose likes, and the crop->image affine.

        Square: BlazePose letterboxes its input to a square; a tall crop leaves the person small
        in it (COCO sample body AP 0.47 with the padded box as is, 0.56 squared). `masked` blacks
        out the image outside the padded box, so a neighbour in the square is not detected instead
        (helps in crowds, hurts elsewhere: it is a retry, bench/results/annotators.json).
        """
        x, y, w, h = (float(v) for v in box)
        side = max(w, h, 1.0) * padding
        x0, y0 = x + 0.5 * w - 0.5 * side, y + 0.5 * h - 0.5 * side
        zoom = max(min_side / side, 1.0)  # small people are upscaled
        if side * zoom > MAX_SIDE:
            zoom = MAX_SIDE / side
        out = max(round(side * zoom), 1)
        to_crop = np.array([[zoom, 0.0, -x0 * zoom], [0.0, zoom, -y0 * zoom]])
        warped = cv2.warpAffine(image, to_crop, (out, out), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        crop = np.asarray(warped, dtype=np.uint8)
        if masked:
            keep = np.zeros_like(crop)
            bx0 = int(max((x + 0.5 * w - 0.5 * w * padding - x0) * zoom, 0))
            by0 = int(max((y + 0.5 * h - 0.5 * h * padding - y0) * zoom, 0))
            bx1 = int(np.ceil((x + 0.5 * w + 0.5 * w * padding - x0) * zoom))
            by1 = int(np.ceil((y + 0.5 * h + 0.5 * h * padding - y0) * zoom))
            keep[by0:by1, bx0:bx1] = crop[by0:by1, bx0:bx1]
            crop = keep
        to_image = np.array([[1.0 / zoom, 0.0, x0], [0.0, 1.0 / zoom, y0]])
        return crop, to_image

    def _landmarks(self, crop: NDArray[np.uint8]) -> NDArray[np.float64] | None:
        """(33, 3) crop-pixel x, y and visibility, or None when BlazePose found no person."""
        rgb = np.ascontiguousarray(crop[..., ::-1])
        with self._lock, noise.quiet_native_stderr("mediapipe"):
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return None
        h, w = crop.shape[:2]
        return np.array([[lm.x * w, lm.y * h, lm.visibility] for lm in result.pose_landmarks.landmark])

    def _attempts(self) -> list[dict[str, Any]]:
        """Crops to try in turn until BlazePose finds the person (the first is the plain recipe)."""
        first = {"padding": self.padding, "min_side": self.min_side, "masked": False, "enhance": False}
        if not self.retry:
            return [first]
        return [first, {**first, "masked": True},
                {**first, "min_side": 2 * self.min_side, "enhance": True}]

    def predict_one(self, image: NDArray[np.uint8], box: NDArray[np.float64]) -> PersonPose:
        self.stats["persons"] += 1
        for attempt, how in enumerate(self._attempts()):
            crop, to_image = self._crop(image, box, how["padding"], how["min_side"], how["masked"])
            found = self._landmarks(_enhance(crop) if how["enhance"] else crop)
            if found is None:
                continue
            self.stats["found_first_try" if attempt == 0 else "found_on_retry"] += 1
            points = found[:, :2] @ to_image[:, :2].T + to_image[:, 2]
            kps = np.zeros((NUM_KEYPOINTS, 2))
            conf = np.zeros(NUM_KEYPOINTS)
            covered = np.zeros(NUM_KEYPOINTS, dtype=bool)
            for lm, idx in LANDMARK_TO_SPINETRACK.items():
                kps[idx] = points[lm]
                conf[idx] = float(np.clip(found[lm, 2], 0.0, 1.0))
                covered[idx] = True
            return PersonPose(kps, conf, covered, [self.identity.name if c else "" for c in covered],
                              np.asarray(box, dtype=np.float64), detail={"attempt": attempt, **how})
        self.stats["missed"] += 1
        pose = empty_pose(box)
        pose.detail = {"missed": True}
        return pose

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        arr = boxes_array(boxes)
        if len(arr) == 0:
            return []
        img = read_image(image)
        out = []
        for j, box in enumerate(arr):
            pose = self.predict_one(img, box)
            pose.box_index = j
            out.append(pose)
        return out
