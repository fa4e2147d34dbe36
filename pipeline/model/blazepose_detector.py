"""BlazePose's person detector (`pose_detection.tflite`) as a PyTorch module, with its anchors and decoding.

The first stage of mediapipe's pose pipeline: on a letterboxed 224x224 RGB image in [-1, 1] it scores
2254 fixed anchors and regresses, per anchor, a box and 4 keypoints (hip centre, full-body scale
point, shoulder centre, upper-body scale point). The landmark network (`blazepose_port`) then runs on
the rotated square region of interest derived from keypoints 0 and 1 (`detection_roi`).

Weights are read from the file in the pinned `mediapipe==0.10.14` wheel with the same graph reader and
op binder as the landmark network (`blazepose_port.TFLiteGraph`, `GraphBinder`); what the detector
adds: its weights are pruned and stored sparse (DENSIFY, expanded by the reader), and its FPN and
heads use DEPTH_TO_SPACE, whose channel order (block row, block column, channel) differs from
`pixel_shuffle`'s (channel, block row, block column): `TFDepthToSpace` reproduces TensorFlow's.

Anchors and decoding follow mediapipe's published `pose_detection_cpu.pbtxt` (not in the wheel as
text): SSD anchors over 5 layers with strides 8/16/32/32/32, fixed anchor size 1 (2, 2 and 6 anchors
per cell at strides 8, 16 and 32: 2254 in all), sigmoid scores with threshold 0.5, regressors in
224-px units as (x centre, y centre, w, h, then x, y per keypoint) relative to the anchor centre,
weighted non-maximum suppression at IoU 0.3; the ROI is centred on keypoint 0, its side twice the
distance to keypoint 1, rotated so that keypoint 0 -> 1 points up, then scaled by 1.25.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.model.blazepose_port import (
    BilinearUpsample,
    GraphBinder,
    GraphMismatch,
    Op,
    ResBlock,
    SeparableConv,
    Stem,
    TFConv2d,
    TFLiteGraph,
    bind_stage,
    mediapipe_file,
)

DETECTOR_MODEL_RELPATH = "modules/pose_detection/pose_detection.tflite"
DETECTOR_INPUT_SIZE = 224
NUM_ANCHORS = 2254
NUM_KEYPOINTS = 4  # hip centre, full-body scale point, shoulder centre, upper-body scale point
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS

#: mediapipe's pose_detection_cpu.pbtxt (SsdAnchorsCalculator, TensorsToDetectionsCalculator,
#: NonMaxSuppressionCalculator, AlignmentPointsRectsCalculator, RectTransformationCalculator).
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated scale, each of fixed size 1
MIN_SCORE = 0.5
SCORE_CLIP = 100.0
NMS_IOU = 0.3
ROI_SCALE = 1.25


def detector_model_path() -> Path:
    """`pose_detection.tflite` inside the installed mediapipe wheel."""
    return mediapipe_file(DETECTOR_MODEL_RELPATH)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class TFDepthToSpace(nn.Module):
    """TensorFlow's DEPTH_TO_SPACE on NCHW tensors.

    TF moves input channel (i * block + j) * C_out + c to output pixel (block row i, block column j) of
    channel c; `pixel_shuffle` reads channel c * block^2 + i * block + j instead, so the two disagree
    whenever C_out > 1.
    """

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        b = self.block
        x = x.reshape(n, b, b, c // (b * b), h, w)  # channel index = (i, j, c_out)
        return x.permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)

    def extra_repr(self) -> str:
        return f"block={self.block}"


class DetectorFeatures(NamedTuple):
    """Backbone outputs the FPN reads (NCHW)."""

    s28: Tensor  # [N,40,28,28]
    s14: Tensor  # [N,112,14,14]
    s7: Tensor  # [N,1152,7,7]


class DetectorBackbone(nn.Module):
    """MobileNetV2-like encoder 224 -> 112 -> 56 -> 28 -> 14 -> 7 (7x7x1152), stages as the graph
    chains them (2, 2, 6 and 4 inverted residuals), ended by a 1x1 expand + depthwise 3x3 `tail`.
    """

    STAGES = ("stage56", "stage28", "stage14", "stage7")

    def __init__(self, stem: Stem, stages: dict[str, nn.Sequential], tail: nn.Sequential) -> None:
        super().__init__()
        self.stem = stem
        self.stage56 = stages["stage56"]
        self.stage28 = stages["stage28"]
        self.stage14 = stages["stage14"]
        self.stage7 = stages["stage7"]
        self.tail = tail

    def forward(self, x: Tensor) -> DetectorFeatures:
        s28 = self.stage28(self.stage56(self.stem(x)))
        s14 = self.stage14(s28)
        return DetectorFeatures(s28, s14, self.tail(self.stage7(s14)))

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, dict[str, int]]:
        stem, t = Stem.bind(b, x, f"{label}.stem")
        stages: dict[str, nn.Sequential] = {}
        tensors: dict[str, int] = {}
        for name in cls.STAGES:
            stages[name], t = bind_stage(b, t, f"{label}.{name}")
            tensors["s" + name.removeprefix("stage")] = t
        expand, t = b.conv(t, depthwise=False, label=f"{label}.tail.0")
        dw, t = b.conv(t, depthwise=True, label=f"{label}.tail.1")
        tensors["s7"] = t
        return cls(stem, stages, nn.Sequential(expand, dw)), tensors


class DetectorFPN(nn.Module):
    """Top-down path 7 -> 14 -> 28: the coarser map is upsampled (bilinear, half-pixel centres) and
    reduced by a 1x1 conv (ReLU6), added to a lateral separable conv of the backbone feature, then
    refined by two residual blocks. Gives the 14x14x192 and 28x28x96 maps the anchor heads read.
    """

    def __init__(self, up14: BilinearUpsample, reduce14: TFConv2d, lateral14: SeparableConv,
                 refine14: nn.Sequential, up28: BilinearUpsample, reduce28: TFConv2d,
                 lateral28: SeparableConv, refine28: nn.Sequential) -> None:
        super().__init__()
        self.up14 = up14
        self.reduce14 = reduce14
        self.lateral14 = lateral14
        self.refine14 = refine14
        self.up28 = up28
        self.reduce28 = reduce28
        self.lateral28 = lateral28
        self.refine28 = refine28

    def forward(self, feats: DetectorFeatures) -> tuple[Tensor, Tensor]:
        p14 = self.refine14(self.lateral14(feats.s14) + self.reduce14(self.up14(feats.s7)))
        p28 = self.refine28(self.lateral28(feats.s28) + self.reduce28(self.up28(p14)))
        return p14, p28

    @classmethod
    def bind(cls, b: GraphBinder, feats: dict[str, int], label: str) -> tuple[Self, int, int]:
        levels = {}
        x = feats["s7"]
        for res, lateral_source in (("14", feats["s14"]), ("28", feats["s28"])):
            up, t = b.resize(x, label=f"{label}.up{res}")
            reduce, t = b.conv(t, depthwise=False, label=f"{label}.reduce{res}")
            lateral, lat = SeparableConv.bind(b, lateral_source, f"{label}.lateral{res}")
            added = b.add(lat, t, label=f"{label}.add{res}")
            if added is None or added[0] != "none":
                raise GraphMismatch(f"{label}: expected ADD(lateral{res}, reduce{res}) without activation")
            refine, x = ResBlock.bind_stack(b, added[1], f"{label}.refine{res}")
            levels[res] = (up, reduce, lateral, refine, x)
        (up14, reduce14, lateral14, refine14, p14), (up28, reduce28, lateral28, refine28, p28) = \
            levels["14"], levels["28"]
        return cls(up14, reduce14, lateral14, refine14, up28, reduce28, lateral28, refine28), p14, p28


class AnchorHead(nn.Module):
    """SSD head at one anchor grid: DEPTH_TO_SPACE x2 of a feature map, then for the scores and for the
    regressors each a stride-2 depthwise 3x3 + 1x1 conv (both linear) back at the grid's resolution;
    outputs are flattened in TFLite's (row, column, anchor) order.
    """

    def __init__(self, to_space: TFDepthToSpace, score: SeparableConv, box: SeparableConv,
                 anchors_per_cell: int) -> None:
        super().__init__()
        self.to_space = to_space
        self.score = score
        self.box = box
        self.anchors_per_cell = anchors_per_cell

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.to_space(x)
        n = x.shape[0]
        scores = self.score(x).permute(0, 2, 3, 1).reshape(n, -1, 1)
        boxes = self.box(x).permute(0, 2, 3, 1).reshape(n, -1, NUM_COORDS)
        return scores, boxes

    def extra_repr(self) -> str:
        return f"anchors_per_cell={self.anchors_per_cell}"

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, int, int]:
        d2s = b.one(x, "DEPTH_TO_SPACE", label=f"{label}.to_space")
        through = ("CONV_2D", "RESHAPE", "CONCATENATION")
        score, s = SeparableConv.bind(b, d2s.outputs[0], f"{label}.score",
                                      where=b.leading_to(_OUT_SCORES, through))
        box, r = SeparableConv.bind(b, d2s.outputs[0], f"{label}.box",
                                    where=b.leading_to(_OUT_REGRESSORS, through))
        per_cell = score.pointwise.out_channels
        if box.pointwise.out_channels != per_cell * NUM_COORDS:
            raise GraphMismatch(f"{label}: {box.pointwise.out_channels} regressors for {per_cell} anchors")
        return cls(TFDepthToSpace(d2s.options["block_size"]), score, box, per_cell), s, r


_OUT_REGRESSORS, _OUT_SCORES = 0, 1


class DetectorOutputs(NamedTuple):
    """The TFLite detector's two outputs, as the interpreter gives them."""

    regressors: Tensor  # [N,2254,12]: box x/y centre offsets, w, h, then 4 keypoints' x/y offsets (224-px)
    scores: Tensor  # [N,2254,1] raw logits


class BlazePoseDetectorNet(nn.Module):
    """BlazePose's person detector, op for op: input [N,3,224,224] RGB in [-1,1] (letterboxed).

    `backbone` (to 7x7x1152), `fpn` (14x14 and 28x28 maps) and three `AnchorHead`s on the 28x28
    (2 anchors per cell), 14x14 (2) and 7x7 (6) grids, concatenated in that order as in the file.
    """

    def __init__(self, backbone: DetectorBackbone, fpn: DetectorFPN, head28: AnchorHead,
                 head14: AnchorHead, head7: AnchorHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head28 = head28
        self.head14 = head14
        self.head7 = head7
        self.source_sha256 = ""
        self.source_ops: dict[str, int] = {}

    def forward(self, x: Tensor) -> DetectorOutputs:
        if x.shape[-3:] != (3, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE):
            raise ValueError(f"expected input [N,3,{DETECTOR_INPUT_SIZE},{DETECTOR_INPUT_SIZE}], "
                             f"got {list(x.shape)}")
        feats = self.backbone(x)
        p14, p28 = self.fpn(feats)
        outs = [self.head28(p28), self.head14(p14), self.head7(feats.s7)]
        return DetectorOutputs(regressors=torch.cat([o[1] for o in outs], dim=1),
                               scores=torch.cat([o[0] for o in outs], dim=1))

    @classmethod
    def from_graph(cls, graph: TFLiteGraph) -> Self:
        """Bind every layer to its op of `graph`; raises GraphMismatch if the graph differs."""
        b = GraphBinder(graph)
        (source,) = graph.inputs
        size = DETECTOR_INPUT_SIZE
        if graph.shapes[source] != (1, size, size, 3) or len(graph.outputs) != 2:
            raise GraphMismatch(f"not a BlazePose detector graph: input {graph.shapes[source]}, "
                                f"{len(graph.outputs)} outputs")
        backbone, feats = DetectorBackbone.bind(b, source, "backbone")
        fpn, p14, p28 = DetectorFPN.bind(b, feats, "fpn")
        heads: dict[str, AnchorHead] = {}
        pieces: dict[int, tuple[int, str]] = {}  # reshaped head output -> (graph output, head)
        for name, x in (("head28", p28), ("head14", p14), ("head7", feats["s7"])):
            heads[name], s, r = AnchorHead.bind(b, x, name)
            for kind, out_index, tensor in (("scores", _OUT_SCORES, s), ("regressors", _OUT_REGRESSORS, r)):
                reshape = b.one(tensor, "RESHAPE", label=f"{name}.{kind}.reshape")
                pieces[reshape.outputs[0]] = (out_index, name)
        for out_index in (_OUT_SCORES, _OUT_REGRESSORS):
            concat = _producer(graph, graph.outputs[out_index], "CONCATENATION")
            order = [pieces.get(t) for t in concat.inputs]
            expected = [(out_index, h) for h in ("head28", "head14", "head7")]
            if order != expected or concat.options["axis"] != 1:
                raise GraphMismatch(f"output {out_index} is not the heads' 28, 14, 7 concatenation: {order}")
            b.used.add(concat.index)
        b.check_complete()
        net = cls(backbone, fpn, heads["head28"], heads["head14"], heads["head7"])
        net.source_sha256 = graph.sha256
        net.source_ops = dict(b.source_ops)
        return net.eval()


def _producer(graph: TFLiteGraph, tensor: int, kind: str) -> Op:
    found = [op for op in graph.ops if tensor in op.outputs and op.kind == kind]
    if len(found) != 1:
        raise GraphMismatch(f"tensor {tensor} is not made by one {kind}")
    return found[0]


def load_detector_net(path: Path | None = None) -> BlazePoseDetectorNet:
    """Convert `pose_detection.tflite` (default: the one in the installed mediapipe wheel) to a
    `BlazePoseDetectorNet` in eval mode."""
    graph = TFLiteGraph(path if path is not None else detector_model_path())
    return BlazePoseDetectorNet.from_graph(graph)


# --------------------------------------------------------------------------------------------------
# Anchors, decoding, non-maximum suppression, region of interest
# --------------------------------------------------------------------------------------------------


def detector_anchors() -> Tensor:
    """[2254, 2] anchor centres (x, y) in [0, 1], in the order of the detector's outputs.

    mediapipe's SsdAnchorsCalculator with fixed anchor size: consecutive layers of the same stride
    share one grid, each layer putting ANCHORS_PER_LAYER anchors on every cell; all have size 1.
    """
    centres: list[Tensor] = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        same = sum(1 for s in ANCHOR_STRIDES[layer:] if s == stride)
        grid = math.ceil(DETECTOR_INPUT_SIZE / stride)
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        cell = torch.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], dim=-1).reshape(-1, 1, 2)
        centres.append(cell.expand(-1, same * ANCHORS_PER_LAYER, 2).reshape(-1, 2))
        layer += same
    anchors = torch.cat(centres).float()
    assert anchors.shape == (NUM_ANCHORS, 2)
    return anchors


def decode_regressors(regressors: Tensor, anchors: Tensor | None = None) -> Tensor:
    """Raw regressors [..., 2254, 12] -> [..., 2254, 12] in [0, 1] letterbox coordinates: box centre x,
    y, width, height, then the 4 keypoints' x, y (anchors of size 1, scales of 224 px)."""
    if anchors is None:
        anchors = detector_anchors()
    shift = torch.zeros(anchors.shape[0], NUM_COORDS, dtype=regressors.dtype, device=regressors.device)
    shift[:, 0::2] = anchors[:, :1].to(shift)
    shift[:, 1::2] = anchors[:, 1:].to(shift)
    shift[:, 2:4] = 0.0  # width and height are sizes, not offsets from the anchor centre
    return regressors / DETECTOR_INPUT_SIZE + shift


@dataclass(frozen=True)
class PersonDetection:
    """One detected person: score (sigmoid), box (x_min, y_min, x_max, y_max) and 4 keypoints (x, y),
    all in the coordinates of the image the detection was mapped to."""

    score: float
    box: tuple[float, float, float, float]
    keypoints: tuple[tuple[float, float], ...]


def _iou(box: Tensor, boxes: Tensor) -> Tensor:
    x0 = torch.maximum(box[0], boxes[:, 0])
    y0 = torch.maximum(box[1], boxes[:, 1])
    x1 = torch.minimum(box[2], boxes[:, 2])
    y1 = torch.minimum(box[3], boxes[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter).clamp(min=1e-12)


def decode_detections(regressors: Tensor, scores: Tensor, *, min_score: float = MIN_SCORE,
                      iou_threshold: float = NMS_IOU) -> list[PersonDetection]:
    """One image's raw outputs ([2254, 12], [2254, 1] or [2254]) -> detections in [0, 1] letterbox
    coordinates, best first: sigmoid scores >= min_score, then mediapipe's weighted NMS (each kept
    detection is the score-weighted mean of the candidates overlapping it by more than iou_threshold,
    with the best candidate's score)."""
    probs = torch.sigmoid(scores.reshape(-1).clamp(-SCORE_CLIP, SCORE_CLIP))
    decoded = decode_regressors(regressors.reshape(NUM_ANCHORS, NUM_COORDS))
    keep = probs >= min_score
    probs, decoded = probs[keep], decoded[keep]
    order = torch.argsort(probs, descending=True)
    probs, decoded = probs[order], decoded[order]
    boxes = torch.stack([decoded[:, 0] - decoded[:, 2] / 2, decoded[:, 1] - decoded[:, 3] / 2,
                         decoded[:, 0] + decoded[:, 2] / 2, decoded[:, 1] + decoded[:, 3] / 2], dim=1)
    points = decoded[:, 4:]
    detections = []
    remaining = torch.arange(len(probs))
    while len(remaining):
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = probs[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        kps = (points[group] * weights).sum(0) / weights.sum()
        detections.append(PersonDetection(
            score=float(probs[best]), box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            keypoints=tuple((float(kps[2 * k]), float(kps[2 * k + 1])) for k in range(NUM_KEYPOINTS))))
        remaining = remaining[~overlap]
    return detections


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the detector's square input: its size and the padding fraction."""

    width: int
    height: int
    pad_x: float  # fraction of the input's width that is padding on each side
    pad_y: float

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """[0, 1] letterbox coordinates -> image pixels."""
        return ((x - self.pad_x) / (1 - 2 * self.pad_x) * self.width,
                (y - self.pad_y) / (1 - 2 * self.pad_y) * self.height)


def letterbox(image: np.ndarray, size: int = DETECTOR_INPUT_SIZE) -> tuple[Tensor, Letterbox]:
    """An HxWx3 uint8 RGB image -> ([3, size, size] in [-1, 1], Letterbox): scaled to fit (bilinear),
    centred, black (-1) around, as mediapipe's ImageToTensorCalculator with keep_aspect_ratio."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    out = torch.zeros(1, 3, size, size)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[..., top:top + new_h, left:left + new_w] = x
    box = Letterbox(width, height, pad_x=left / size, pad_y=top / size)
    return (out[0] / 127.5 - 1.0).clamp(-1.0, 1.0), box


def detections_to_image(detections: list[PersonDetection], box: Letterbox) -> list[PersonDetection]:
    """Detections in letterbox coordinates -> image pixels (mediapipe's letterbox removal)."""
    out = []
    for det in detections:
        x0, y0 = box.to_image(det.box[0], det.box[1])
        x1, y1 = box.to_image(det.box[2], det.box[3])
        out.append(PersonDetection(det.score, (x0, y0, x1, y1),
                                   tuple(box.to_image(x, y) for x, y in det.keypoints)))
    return out


@dataclass(frozen=True)
class RegionOfInterest:
    """The rotated square the landmark network is run on, in image pixels: centre, side, rotation
    (radians, counter-clockwise positive as in mediapipe's NormalizedRect)."""

    x: float
    y: float
    side: float
    rotation: float


def detection_roi(detection: PersonDetection, scale: float = ROI_SCALE) -> RegionOfInterest:
    """mediapipe's pose ROI of a detection in image pixels: centred on keypoint 0 (hip centre), side
    2 x |kp1 - kp0| times `scale`, rotated so that kp0 -> kp1 points up (target angle 90 degrees)."""
    (x0, y0), (x1, y1) = detection.keypoints[0], detection.keypoints[1]
    side = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
    angle = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    return RegionOfInterest(x0, y0, side, angle)


def detect_people(net: Callable[[Tensor], DetectorOutputs], image: np.ndarray, *,
                  min_score: float = MIN_SCORE) -> list[PersonDetection]:
    """Run the detector (the network, or onnxruntime replaying it) on an HxWx3 uint8 RGB image;
    detections in image pixels, best first."""
    return detect_people_in(net, [image], min_score=min_score)[0]


def detect_people_in(net: Callable[[Tensor], DetectorOutputs], images: Sequence[np.ndarray], *,
                     min_score: float = MIN_SCORE) -> list[list[PersonDetection]]:
    """`detect_people` for several images in one call of the detector (faster per image)."""
    fitted = [letterbox(image) for image in images]
    with torch.no_grad():
        out = net(torch.stack([x for x, _ in fitted]))
    return [detections_to_image(decode_detections(out.regressors[n], out.scores[n], min_score=min_score), box)
            for n, (_, box) in enumerate(fitted)]
