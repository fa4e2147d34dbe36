"""Person boxes for images that come without any: BlazePose's detector (the offline default) or an
ONNX detector the user passes (YOLOX / RTMDet in rtmlib's format, RF-DETR).

The default needs nothing but the pinned mediapipe wheel: `pose_detection.tflite`, converted to
PyTorch (pipeline/model/blazepose_detector.py). It is a one-person finder: mediapipe keeps the best
detection per image, and so do we. Its box surrounds the face; the body comes from its keypoints 0
(hip centre) and 1 (full-body scale point, about the head top), so the person box is derived from
them (`body_box`; the derivation that measured best on the sample photos, bench/detector.py).

ONNX files follow their runtimes' reference code (rtmlib `YOLOX`, `RTMDet`, `RFDETR`), nothing is
downloaded: YOLOX and RTMDet take a letterboxed BGR image (top-left, padded with 114; RTMDet also
mean/std normalised), and give either raw YOLOX rows (cx, cy, w, h offsets, objectness, class
scores on 8/16/32 grids; decoded, then per-class NMS) or the end-to-end export's (x0, y0, x1, y1,
score) rows with NMS inside. RF-DETR takes a plain resize with ImageNet mean/std and gives
normalised (cx, cy, w, h) boxes and class logits (index 1 = person). One difference from rtmlib, on
purpose: RF-DETR gets RGB pixels (it was trained on RGB; rtmlib feeds cv2's BGR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from pipeline.annotators.onnx import providers
from pipeline.model.blazepose_detector import (
    MIN_SCORE,
    BlazePoseDetectorNet,
    PersonDetection,
    detect_people,
    load_detector_net,
)
from pipeline.store import file_sha256
from schemas.errors import InputError

Box = tuple[float, float, float, float]  # x, y, w, h in image pixels

#: BlazePose body box: a rectangle centred on the hip centre along the hip -> scale-point axis,
#: BODY_LENGTH x that distance long and BODY_WIDTH x it wide, then its axis-aligned bounds in the
#: image. Measured against the sample photos' true boxes (bench/detector.py): the mediapipe ROI
#: square (2 x 1.25 both ways) is far too wide and loses recall at IoU 0.5.
BODY_LENGTH = 2.0
BODY_WIDTH = 1.0

DEFAULT_INPUT_SIZE = (640, 640)  # (h, w), rtmlib's default when the file's input is not fixed
PAD_VALUE = 114
YOLOX_STRIDES = (8, 16, 32)
RTMDET_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)  # BGR, as mmdet trains it
RTMDET_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
RFDETR_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # RGB
RFDETR_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RFDETR_PERSON = 1  # COCO category id; index 0 is the export's background slot
RFDETR_TOPK = 300
NMS_IOU = 0.45
#: rtmlib's score thresholds: raw YOLOX rows 0.7 (before NMS), everything else 0.3.
MIN_SCORES = {"raw": 0.7, "end2end": 0.3, "rfdetr": 0.3}
FAMILIES = ("yolox", "rtmdet", "rfdetr")


@dataclass(frozen=True)
class PersonBox:
    """One person found in an image: box [x, y, w, h] in pixels and the detector's score."""

    bbox: Box
    score: float


class PersonDetector(Protocol):
    """Finds people in an HxWx3 uint8 BGR image (cv2's order, as every reader here gives)."""

    name: str  # how the store records it (instance meta "detector")
    sha256: str  # the model file's hash: instance keys and provenance
    one_person: bool  # finds at most one person per image

    def detect(self, image: NDArray[np.uint8]) -> list[PersonBox]: ...


# --------------------------------------------------------------------------------------------------
# BlazePose (default)
# --------------------------------------------------------------------------------------------------


def rotated_box(det: PersonDetection, length: float, width: float, size: tuple[int, int]) -> Box | None:
    """Axis-aligned bounds, clipped to the image (`size` = (w, h)), of the rectangle centred on
    keypoint 0 whose sides are `length` and `width` times |kp1 - kp0|, along and across kp0 -> kp1.
    None when nothing of it lies in the image."""
    (x0, y0), (x1, y1) = det.keypoints[0], det.keypoints[1]
    d = math.hypot(x1 - x0, y1 - y0)
    if not d > 0:
        return None
    ux, uy = (x1 - x0) / d, (y1 - y0) / d
    half_l, half_w = length * d / 2, width * d / 2
    xs = [x0 + a * ux * half_l - b * uy * half_w for a in (-1, 1) for b in (-1, 1)]
    ys = [y0 + a * uy * half_l + b * ux * half_w for a in (-1, 1) for b in (-1, 1)]
    left, top = max(0.0, min(xs)), max(0.0, min(ys))
    right, bottom = min(float(size[0]), max(xs)), min(float(size[1]), max(ys))
    if right - left < 1 or bottom - top < 1:
        return None
    return (left, top, right - left, bottom - top)


def body_box(det: PersonDetection, size: tuple[int, int]) -> Box | None:
    """The person box of a BlazePose detection (the derivation bench/detector.py chose)."""
    return rotated_box(det, BODY_LENGTH, BODY_WIDTH, size)


class BlazePoseBoxes:
    """BlazePose's detector as a person-box detector: the best detection of each image, one person."""

    one_person = True

    def __init__(self, net: BlazePoseDetectorNet | None = None, *, min_score: float = MIN_SCORE) -> None:
        self.net = net if net is not None else load_detector_net()
        self.min_score = min_score
        self.name = "blazepose"
        self.sha256 = self.net.source_sha256

    def detections(self, image: NDArray[np.uint8]) -> list[PersonDetection]:
        """mediapipe's detections (face box, 4 keypoints) in image pixels, best first."""
        rgb = np.ascontiguousarray(image[..., 2::-1])
        return detect_people(self.net, rgb, min_score=self.min_score)

    def detect(self, image: NDArray[np.uint8]) -> list[PersonBox]:
        dets = self.detections(image)
        box = body_box(dets[0], (image.shape[1], image.shape[0])) if dets else None
        return [PersonBox(box, dets[0].score)] if box is not None else []


# --------------------------------------------------------------------------------------------------
# ONNX detectors
# --------------------------------------------------------------------------------------------------


def letterbox_topleft(image: NDArray[np.uint8], size: tuple[int, int]) -> tuple[NDArray[np.uint8], float]:
    """rtmlib's detector input: scaled to fit `size` (h, w), top-left, padded with 114; and the ratio."""
    h, w = image.shape[:2]
    ratio = min(size[0] / h, size[1] / w)
    new_w, new_h = int(w * ratio), int(h * ratio)
    out = np.full((size[0], size[1], 3), PAD_VALUE, dtype=np.uint8)
    if new_w > 0 and new_h > 0:
        out[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, ratio


def nms(boxes: NDArray[np.float64], scores: NDArray[np.float64], iou: float) -> list[int]:
    """Greedy single-class NMS on x0, y0, x1, y1 boxes (rtmlib's: +1 pixel areas); kept indices."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return keep


def yolox_grid(size: tuple[int, int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cell offsets (N, 2) and strides (N, 1) of YOLOX's 8/16/32 grids, rows in output order."""
    cells, strides = [], []
    for stride in YOLOX_STRIDES:
        ys, xs = np.meshgrid(np.arange(size[0] // stride), np.arange(size[1] // stride), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((xs.size, 1), stride))
    return np.concatenate(cells).astype(np.float64), np.concatenate(strides).astype(np.float64)


def decode_yolox(rows: NDArray[np.float32], size: tuple[int, int], ratio: float, min_score: float,
                 iou: float = NMS_IOU) -> list[PersonBox]:
    """Raw YOLOX rows (N, 5 + classes) -> person boxes in image pixels: grid decode, objectness x
    class score, per-class NMS, class 0 kept (rtmlib `YOLOX.postprocess`)."""
    cells, strides = yolox_grid(size)
    pred = rows.astype(np.float64)
    centre = (pred[:, :2] + cells) * strides
    wh = np.exp(pred[:, 2:4]) * strides
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1) / ratio
    scores = pred[:, 4:5] * pred[:, 5:]
    person = scores[:, 0]
    # per-class NMS: a person row only competes with person rows
    mask = person > min_score
    kept = nms(boxes[mask], person[mask], iou)
    return [_xyxy_box(boxes[mask][i], float(person[mask][i])) for i in kept]


def decode_end2end(dets: NDArray[np.float32], labels: NDArray[np.generic] | None, ratio: float,
                   min_score: float) -> list[PersonBox]:
    """End-to-end export rows (N, 5: x0, y0, x1, y1, score; NMS done inside) -> person boxes."""
    out = []
    for n, row in enumerate(dets.astype(np.float64)):
        if row[4] > min_score and (labels is None or int(labels[n]) == 0):
            out.append(_xyxy_box(row[:4] / ratio, float(row[4])))
    return out


def decode_rfdetr(boxes: NDArray[np.float32], logits: NDArray[np.float32], size: tuple[int, int],
                  min_score: float, topk: int = RFDETR_TOPK) -> list[PersonBox]:
    """RF-DETR outputs (Q, 4 normalised cx, cy, w, h; Q, C logits) -> person boxes in pixels of an
    image of `size` (w, h): sigmoid, top-k over queries x classes, person class kept (rtmlib)."""
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    probs[:, 0] = -1.0
    flat = probs.ravel()
    top = np.argsort(-flat, kind="stable")[: min(topk, flat.size)]
    w, h = size
    out = []
    for index in top:
        query, label = divmod(int(index), probs.shape[1])
        if flat[index] > min_score and label == RFDETR_PERSON:
            cx, cy, bw, bh = (float(v) for v in boxes[query])
            bw, bh = max(bw, 0.0), max(bh, 0.0)
            out.append(_xyxy_box(np.array([(cx - bw / 2) * w, (cy - bh / 2) * h,
                                           (cx + bw / 2) * w, (cy + bh / 2) * h]), float(flat[index])))
    return out


def _xyxy_box(xyxy: NDArray[np.float64], score: float) -> PersonBox:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return PersonBox((x0, y0, x1 - x0, y1 - y0), score)


def _clip(box: PersonBox, width: int, height: int) -> PersonBox | None:
    x, y, w, h = box.bbox
    left, top = max(0.0, x), max(0.0, y)
    right, bottom = min(float(width), x + w), min(float(height), y + h)
    if right - left < 1 or bottom - top < 1:
        return None
    return PersonBox((left, top, right - left, bottom - top), box.score)


class OnnxDetector:
    """An ONNX person detector run with onnxruntime; its output format is read from a probe run."""

    one_person = False

    def __init__(self, path: str | Path, *, family: str | None = None, min_score: float | None = None,
                 device: str = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "detector file not found")
        if family is not None and family not in FAMILIES:
            raise InputError(self.path, f"unknown detector family {family!r}; one of {FAMILIES}")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputError(self.path, f"not an ONNX detector: onnxruntime cannot load it ({exc})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InputError(self.path, f"not a person detector: expected one (1, 3, H, W) input, got "
                             f"{[i.shape for i in inputs]}")
        shape = inputs[0].shape
        fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
        self.input_size = (int(shape[2]), int(shape[3])) if fixed else DEFAULT_INPUT_SIZE  # (h, w)
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        probe = self._run(np.zeros((1, 3, *self.input_size), dtype=np.float32))
        self.layout = self._layout(probe, family)
        self.family = family or ("rfdetr" if self.layout == "rfdetr" else "yolox")
        if (self.family == "rfdetr") != (self.layout == "rfdetr"):
            raise InputError(self.path, f"outputs {[o.shape for o in probe]} do not fit family {self.family}")
        self.min_score = MIN_SCORES[self.layout] if min_score is None else min_score
        self.sha256 = file_sha256(self.path)
        self.name = f"{self.family}:{self.path.name}"

    def _run(self, x: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        try:
            return [np.asarray(o) for o in self.session.run(self.output_names, {self.input_name: x})]
        except Exception as exc:
            raise InputError(self.path, f"not a person detector: onnxruntime cannot run it ({exc})") from exc

    def _layout(self, outs: list[NDArray[np.float32]], family: str | None) -> str:
        """Which of the known output formats the file gives: raw YOLOX rows, end-to-end dets, RF-DETR."""
        first = outs[0]
        shapes = [o.shape for o in outs]
        if (len(outs) >= 2 and first.ndim == 3 and first.shape[-1] == 4 and outs[1].ndim == 3
                and outs[1].shape[:2] == first.shape[:2] and outs[1].shape[2] > RFDETR_PERSON):
            return "rfdetr"
        if first.ndim == 3 and first.shape[-1] == 5:
            return "end2end"
        anchors = len(yolox_grid(self.input_size)[0])
        if first.ndim == 3 and first.shape[-1] > 5 and first.shape[1] == anchors:
            return "raw"
        raise InputError(self.path, f"not a person detector: outputs {shapes} are neither YOLOX/RTMDet rows "
                         f"(1, {anchors}, 5 + classes) or (1, N, 5) nor RF-DETR boxes + logits")

    def preprocess(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.float32], float]:
        """The network input (1, 3, H, W) and the letterbox ratio (1 for RF-DETR's plain resize)."""
        if self.family == "rfdetr":
            h, w = self.input_size
            rgb = cv2.resize(image[..., ::-1], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            x = (rgb / 255.0 - RFDETR_MEAN) / RFDETR_STD
            ratio = 1.0
        else:
            padded, ratio = letterbox_topleft(image, self.input_size)
            x = padded.astype(np.float32)
            if self.family == "rtmdet":
                x = (x - RTMDET_MEAN) / RTMDET_STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32), ratio

    def detect(self, image: NDArray[np.uint8]) -> list[PersonBox]:
        x, ratio = self.preprocess(image)
        outs = self._run(x)
        height, width = image.shape[:2]
        if self.layout == "rfdetr":
            found = decode_rfdetr(outs[0][0], outs[1][0], (width, height), self.min_score)
        elif self.layout == "end2end":
            labels = outs[1][0] if len(outs) > 1 and outs[1].ndim == 2 else None
            found = decode_end2end(outs[0][0], labels, ratio, self.min_score)
        else:
            found = decode_yolox(outs[0][0], self.input_size, ratio, self.min_score)
        clipped = (_clip(b, width, height) for b in found)
        return sorted((b for b in clipped if b is not None), key=lambda b: -b.score)


def load_detector(spec: str | None = None, *, min_score: float | None = None,
                  device: str = "cpu") -> PersonDetector:
    """A detector from its spec: `blazepose` (default, offline, one person per image), `onnx:PATH`
    (format read from the file: RF-DETR, else YOLOX preprocessing), or `yolox:PATH`, `rtmdet:PATH`,
    `rfdetr:PATH` to name the family (RTMDet's mean/std cannot be read from an end-to-end file)."""
    if spec is None or spec == "blazepose":
        return BlazePoseBoxes(min_score=MIN_SCORE if min_score is None else min_score)
    kind, sep, path = spec.partition(":")
    if not sep or not path or kind not in ("onnx", *FAMILIES):
        raise InputError(spec, "unknown detector: use blazepose, onnx:PATH, yolox:PATH, rtmdet:PATH or "
                         "rfdetr:PATH", field="detector")
    return OnnxDetector(path, family=None if kind == "onnx" else kind, min_score=min_score, device=device)
