"""Person crops made the way BlazePose makes them: its detector's rotated region of interest.

mediapipe does not feed its landmark network the person box: its detector finds the hip centre
and a full-body scale point, and the crop is the square around the hip centre, twice their
distance (x 1.25) wide, rotated so that the body stands upright (`detection_roi`). The network was
trained on such crops; on plain box squares it loses a good part of its accuracy (docs/model.md).

With a person box given, the detector runs on the padded square around the box (what the BlazePose
annotator hands mediapipe), and the detection whose hip centre lies inside the box is taken (a
neighbour may be detected in the square too). No such detection: no region, and the caller falls
back to the box square.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pipeline.model.blazepose_detector import (
    DETECTOR_INPUT_SIZE,
    DetectorOutputs,
    PersonDetection,
    RegionOfInterest,
    detect_people_in,
    detection_roi,
    load_detector_net,
)
from pipeline.model.onnx_runner import OnnxRunner

Detector = Callable[[Tensor], DetectorOutputs]

#: The box is padded by this, squared, before the detector sees it (as for mediapipe).
BOX_PADDING = 1.25

Affine = NDArray[np.float64]  # (2, 3): [x', y'] = A @ [x, y, 1]


class OnnxDetector:
    """The converted detector replayed by onnxruntime (about twice torch's speed on one core)."""

    def __init__(self) -> None:
        example = torch.zeros(1, 3, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE)
        self.runner = OnnxRunner(load_detector_net(), example, ("regressors", "scores"))

    def __call__(self, x: Tensor) -> DetectorOutputs:
        regressors, scores = self.runner(x)
        return DetectorOutputs(regressors, scores)


@lru_cache(maxsize=1)
def shared_detector() -> Detector:
    """The detector, converted once per process (conversion reads the wheel's TFLite file)."""
    return OnnxDetector()


def box_square(box: NDArray[np.float64], size: int) -> Affine:
    """image -> crop affine of the padded, squared box resampled to size x size pixels."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h, 1.0) * BOX_PADDING
    zoom = size / side
    x0, y0 = x + 0.5 * w - 0.5 * side, y + 0.5 * h - 0.5 * side
    return np.array([[zoom, 0.0, -x0 * zoom], [0.0, zoom, -y0 * zoom]])


def invert(affine: Affine) -> Affine:
    return np.asarray(cv2.invertAffineTransform(affine), dtype=np.float64)


def roi_affine(roi: RegionOfInterest, size: int) -> Affine:
    """image -> crop affine of a rotated region: its centre to the crop's, its up direction up."""
    scale = roi.side / size
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    half = 0.5 * size
    # crop (u, v) -> image: centre + R(rotation) @ scale * (u - half, v - half)
    to_image = np.array([
        [scale * cos, -scale * sin, roi.x - scale * (cos * half - sin * half)],
        [scale * sin, scale * cos, roi.y - scale * (sin * half + cos * half)],
    ])
    return invert(to_image)


def warp(image: NDArray[np.uint8], affine: Affine, size: int) -> NDArray[np.uint8]:
    """The crop of `affine` (image -> crop), black outside the image (as mmpose's TopdownAffine)."""
    return np.asarray(cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)), dtype=np.uint8)


def person_rois(people: Sequence[tuple[NDArray[np.uint8], NDArray[np.float64]]],
                detector: Detector | None = None) -> list[RegionOfInterest | None]:
    """BlazePose's region of interest for each (BGR image, x/y/w/h box), or None where its detector
    finds nobody whose hip centre lies in the box. One detector call for all of them (batches run
    faster per person than single crops)."""
    if not people:
        return []
    to_squares = [box_square(box, DETECTOR_INPUT_SIZE) for _, box in people]
    squares = [np.ascontiguousarray(warp(image, to_square, DETECTOR_INPUT_SIZE)[..., ::-1])
               for (image, _), to_square in zip(people, to_squares, strict=True)]
    if detector is None:
        found = _SEEN.detect(squares)
    else:
        found = detect_people_in(detector, squares)  # in square pixels
    return [_roi_in_box(dets, box, invert(to_square))
            for dets, (_, box), to_square in zip(found, people, to_squares, strict=True)]


def region_crops(people: Sequence[tuple[NDArray[np.uint8], NDArray[np.float64]]],
                 size: int) -> list[tuple[NDArray[np.uint8], Affine] | None]:
    """Each person's size x size crop of BlazePose's region of interest and the crop -> image
    affine; None where the detector finds nobody in the box (the caller crops the box instead)."""
    out: list[tuple[NDArray[np.uint8], Affine] | None] = []
    for (image, _), roi in zip(people, person_rois(people), strict=True):
        if roi is None:
            out.append(None)
            continue
        to_crop = roi_affine(roi, size)
        out.append((warp(image, to_crop, size), invert(to_crop)))
    return out


class _SeenSquares:
    """The shared detector's detections of the squares it saw lately, by their pixels' digest.

    The detector is BlazePose's own fixed network, so a square gives the same detections whichever
    pose model asks: every round pseudo-labels the same pool and scores the same validation people,
    and each would otherwise run the detector on all of them again."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.found: OrderedDict[bytes, list[PersonDetection]] = OrderedDict()

    def detect(self, squares: Sequence[NDArray[np.uint8]]) -> list[list[PersonDetection]]:
        keys = [hashlib.blake2b(square.tobytes(), digest_size=16).digest() for square in squares]
        new = {key: square for key, square in zip(keys, squares, strict=True) if key not in self.found}
        if new:
            for key, dets in zip(new, detect_people_in(shared_detector(), list(new.values())), strict=True):
                self.found[key] = dets
        for key in keys:
            self.found.move_to_end(key)
        out = [self.found[key] for key in keys]
        while len(self.found) > self.size:
            self.found.popitem(last=False)
        return out


#: Squares remembered (a few detections each): a pool and a validation split of thousands fit.
_SEEN = _SeenSquares(20000)


def _roi_in_box(detections: list[PersonDetection], box: NDArray[np.float64],
                back: Affine) -> RegionOfInterest | None:
    """The region of the best detection (in square pixels) whose hip centre lies in the box, in image
    pixels; `back` maps the square to the image."""
    x, y, w, h = (float(v) for v in box)
    for det in detections:  # best first
        hx, hy = back @ np.array([*det.keypoints[0], 1.0])
        if x <= hx <= x + w and y <= hy <= y + h:
            roi = detection_roi(det)
            cx, cy = back @ np.array([roi.x, roi.y, 1.0])
            return RegionOfInterest(float(cx), float(cy), roi.side * float(back[0, 0]), roi.rotation)
    return None
