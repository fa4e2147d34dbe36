"""ONNX pose models in the RTMPose / SpinePose format, run with onnxruntime (CPU or CUDA).

What a user really has: the authors' SpinePose-s/m/l ONNX files, RTMPose / RTMW body exports, or a
project model exported with `export_onnx`. The model takes a normalised (N, 3, H, W) crop and
returns SimCC vectors (simcc_x (N, K, W*r), simcc_y (N, K, H*r)) or, for heatmap models such as
the default student `blaze37`, one (N, K, H/s, W/s) heatmap, for K = 17 (COCO), 26 (Halpe26) or 37
(SpineTrack) keypoints; their first K indices are SpineTrack's, so no remapping is needed.
Heatmaps are decoded as the torch student decodes them (pipeline.heatmap_decode: mmpose's maximum
+ DARK refinement, batched), so an exported student answers like its torch self.

Pre- and post-processing follow rtmlib / spinepose (the runtimes those files ship with): box
padded 1.25x and widened to the input's aspect ratio, affine warp, ImageNet mean/std, argmax SimCC
decode with split ratio r = 2.0 (read from the output shapes), mapped back to the image. One
difference, on purpose: rtmlib feeds cv2's BGR pixels to the RGB-ordered mean/std, while the
models were trained on RGB (mmpose `bgr_to_rgb=True`; rtmlib issue #48). We convert to RGB by
default; `channels="bgr"` reproduces rtmlib exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.annotators.base import (
    AnnotatorIdentity,
    BaseAnnotator,
    ImageInput,
    PersonPose,
    boxes_array,
)
from pipeline.annotators.crop import Crop, RegionCrop, read_image, topdown_crop
from pipeline.heatmap_decode import decode_heatmaps
from pipeline.store.store import file_sha256
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS, flip_permutation

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
#: RTMPose's SimCC label sigma at 192x256 input; it scales with the input size.
SIGMA_AT_192x256 = (4.9, 5.66)
#: The softmax temperature RTMPose trains the SimCC logits with (KLDiscretLoss beta).
BETA = 10.0
KNOWN_KEYPOINT_COUNTS = (17, 26, NUM_KEYPOINTS)


#: ONNX metadata key naming the crops a file's model takes ("box" when absent).
CROP_KEY = "spinetrack.crop"


def providers(device: str) -> list[Any]:
    """onnxruntime execution providers for "cpu", "cuda" or "cuda:N" (CPU as the fallback)."""
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def simcc_confidence(logits: NDArray[np.float32], sigma: float, beta: float = BETA) -> NDArray[np.float64]:
    """(N, K, B) SimCC logits -> (N, K) probability mass within two sigmas of the peak, under the
    softmax the model was trained with (the same measure as pipeline.model.predict)."""
    z = logits.astype(np.float64) * beta
    z -= z.max(axis=-1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=-1, keepdims=True)
    peak = prob.argmax(axis=-1)[..., None]
    radius = math.ceil(2.0 * sigma)
    bins = np.arange(prob.shape[-1])
    window = np.abs(bins - peak) <= radius
    return np.asarray((prob * window).sum(axis=-1), dtype=np.float64)


def simcc_argmax(simcc_x: NDArray[np.float32], simcc_y: NDArray[np.float32]
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """rtmlib's decode: argmax bin per axis, and the smaller of the two maxima as the score."""
    x = simcc_x.argmax(axis=-1).astype(np.float64)
    y = simcc_y.argmax(axis=-1).astype(np.float64)
    score = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float64)
    locs = np.stack([x, y], axis=-1)
    locs[score <= 0] = -1
    return locs, score


class OnnxPoseAnnotator(BaseAnnotator):
    """An RTMPose/SpinePose ONNX file as an annotator."""

    def __init__(self, path: str | Path, *, device: str = "cpu", channels: str = "rgb",
                 flip_test: bool = False, batch_size: int = 16, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "ONNX model file not found")
        if channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputError(self.path, f"onnxruntime cannot load the model: {exc}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not outputs:
            raise InputError(self.path, "not a top-down pose model: expected one (N, 3, H, W) input and "
                             f"SimCC or heatmap outputs, got {len(inputs)} inputs, {len(outputs)} outputs")
        shape = inputs[0].shape
        h, w = shape[2], shape[3]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise InputError(self.path, f"input size must be fixed, got {shape}")
        self.input_name = inputs[0].name
        self.input_size = (int(w), int(h))
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        # output shapes are often symbolic in exported graphs: one forward pass tells them
        probe = np.zeros((1, 3, int(h), int(w)), dtype=np.float32)
        try:
            first = self.session.run(None, {self.input_name: probe})
        except Exception as exc:
            raise InputError(self.path, f"onnxruntime cannot run the model: {exc}") from exc
        self.kind = "heatmap" if first[0].ndim == 4 else "simcc"
        self.output_names = [o.name for o in outputs[: 1 if self.kind == "heatmap" else 2]]
        k = self._check_outputs(first)
        if k not in KNOWN_KEYPOINT_COUNTS:
            raise InputError(self.path, f"{k} keypoints: expected one of {KNOWN_KEYPOINT_COUNTS} "
                             "(COCO-17, Halpe26, SpineTrack-37)")
        self.num_keypoints = k
        self.sigma = (SIGMA_AT_192x256[0] * w / 192.0, SIGMA_AT_192x256[1] * h / 256.0)
        self.channels = channels
        self.flip_test = flip_test
        self.batch_size = max(1, batch_size if self.fixed_batch in (None, -1) else 1)
        self.covers = tuple(range(self.num_keypoints))
        self.device = device
        #: "roi" for a SpineTrack student exported with BlazePose's region crops (export_onnx
        #: writes it into the file's metadata), "box" for RTMPose/SpinePose files
        self.crop = str(self.session.get_modelmeta().custom_metadata_map.get(CROP_KEY, "box"))
        if self.crop not in ("box", "roi") or (self.crop == "roi" and w != h):
            raise InputError(self.path, f"metadata {CROP_KEY}={self.crop!r}: expected 'box', or 'roi' "
                             "with a square input")
        self.identity = AnnotatorIdentity(f"onnx:{self.path.stem}", file_sha256(self.path), "onnx")

    def _check_outputs(self, first: list[Any]) -> int:
        """The keypoint count, after checking the outputs are SimCC vectors or heatmaps."""
        w, h = self.input_size
        if self.kind == "heatmap":
            heat = first[0]
            rows, cols = int(heat.shape[2]), int(heat.shape[3])
            if rows < 2 or h % rows or w % cols or h // rows != w // cols:
                raise InputError(self.path, f"output {heat.shape} is not a heatmap of the {w}x{h} input")
            self.stride = h // rows
            return int(heat.shape[1])
        if len(first) < 2:
            raise InputError(self.path, f"one output {first[0].shape}: neither SimCC vectors nor a heatmap")
        sx, sy = first[:2]
        if sx.ndim != 3 or sy.ndim != 3 or sx.shape[1] != sy.shape[1]:
            raise InputError(self.path, f"outputs {sx.shape}, {sy.shape} are not SimCC (N, K, bins) vectors")
        self.split_ratio = float(sx.shape[2]) / w
        if abs(float(sy.shape[2]) / h - self.split_ratio) > 1e-6:
            raise InputError(self.path, f"SimCC outputs {sx.shape}, {sy.shape} disagree on the split ratio")
        return int(sx.shape[1])

    # -- the reference runtime's steps ------------------------------------------------------------
    def preprocess(self, crop: Crop | RegionCrop) -> NDArray[np.float32]:
        img = crop.image[..., ::-1] if self.channels == "rgb" else crop.image
        x = (img.astype(np.float32) - MEAN) / STD
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def _run(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        out = self.session.run(self.output_names, {self.input_name: batch})
        return np.asarray(out[0], dtype=np.float32), np.asarray(out[1], dtype=np.float32)

    def simcc(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """SimCC logits of normalised crops (N, 3, H, W), flip-averaged when flip_test is on."""
        sx, sy = self._run(batch)
        if self.flip_test:
            fx, fy = self._run(np.ascontiguousarray(batch[..., ::-1]))
            perm = list(flip_permutation())[: self.num_keypoints]
            sx = (sx + fx[:, perm, ::-1]) * 0.5
            sy = (sy + fy[:, perm]) * 0.5
        return sx, sy

    def heatmaps(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Heatmaps of normalised crops, flip-averaged as mmpose does (mirrored, partners swapped,
        shifted one cell) when flip_test is on."""
        heat = np.asarray(self.session.run(self.output_names, {self.input_name: batch})[0], dtype=np.float32)
        if self.flip_test:
            flipped = np.asarray(self.session.run(self.output_names, {
                self.input_name: np.ascontiguousarray(batch[..., ::-1])})[0], dtype=np.float32)
            perm = list(flip_permutation())[: self.num_keypoints]
            back = flipped[:, perm, :, ::-1].copy()
            back[..., 1:] = back[..., :-1].copy()
            heat = (heat + back) * 0.5
        return heat

    def _decode(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float64], ...]:
        """(keypoints in crop pixels, raw scores, confidence in [0, 1]), each (N, K[, 2])."""
        if self.kind == "heatmap":
            heat = self.heatmaps(batch)
            cells, peaks = decode_heatmaps(heat, (self.stride, self.stride))
            scores = peaks.astype(np.float64)
            return cells.astype(np.float64), scores, np.clip(scores, 0.0, 1.0)
        sx, sy = self.simcc(batch)
        locs, raw = simcc_argmax(sx, sy)
        conf = 0.5 * (simcc_confidence(sx, self.sigma[0]) + simcc_confidence(sy, self.sigma[1]))
        return locs / self.split_ratio, raw, conf

    def _poses(self, crops: Sequence[Crop | RegionCrop], boxes: NDArray[np.float64]) -> list[PersonPose]:
        batch = np.stack([self.preprocess(c) for c in crops])
        locs, raw, conf = self._decode(batch)
        poses = []
        for n, crop in enumerate(crops):
            kps = np.zeros((NUM_KEYPOINTS, 2))
            confidence = np.zeros(NUM_KEYPOINTS)
            raw_scores = np.zeros(NUM_KEYPOINTS)
            k = self.num_keypoints
            kps[:k] = crop.to_image(locs[n])
            confidence[:k] = conf[n]
            raw_scores[:k] = raw[n]
            covered = np.zeros(NUM_KEYPOINTS, dtype=bool)
            covered[:k] = raw[n] > 0  # rtmlib marks a non-positive maximum as "no location"
            poses.append(PersonPose(
                keypoints=kps, confidence=confidence, covered=covered,
                origin=[self.identity.name if c else "" for c in covered], bbox=boxes[n],
                raw_scores=raw_scores,
            ))
        return poses

    def predict(self, image: ImageInput, boxes: Sequence[Sequence[float]]) -> list[PersonPose]:
        arr = boxes_array(boxes)
        if len(arr) == 0:
            return []
        img = read_image(image)
        out: list[PersonPose] = []
        for start in range(0, len(arr), self.batch_size):
            part = arr[start : start + self.batch_size]
            out.extend(self._poses(self._crops(img, part), part))
        for j, pose in enumerate(out):
            pose.box_index = j
        return out

    def _crops(self, img: NDArray[np.uint8], boxes: NDArray[np.float64]) -> list[Crop | RegionCrop]:
        """The file's crops: box crops as RTMPose's runtimes make them, or BlazePose's regions of
        interest (pipeline.model.roi, the box crop where its detector finds nobody in the box)."""
        if self.crop == "box":
            return [topdown_crop(img, box, self.input_size) for box in boxes]
        from pipeline.model.roi import region_crops

        regions = region_crops([(img, box) for box in boxes], self.input_size[0])
        return [topdown_crop(img, box, self.input_size) if region is None else RegionCrop(*region)
                for box, region in zip(boxes, regions, strict=True)]


def export_onnx(model: Any, path: str | Path, *, opset: int = 17) -> Path:
    """Export an mmpose top-down model (a registered SpineTrack model) to ONNX.

    The graph is preprocessing + backbone + head on an ImageNet-normalised RGB crop (the input every
    file of this format takes; a model that normalises otherwise, as blaze37's [0, 1] input, gets
    its own normalisation inside the graph), with a dynamic batch axis. Outputs: `simcc_x`,
    `simcc_y` (RTMPose / SpinePose layout) for SimCC heads, `heatmaps` for heatmap heads. Legacy
    (TorchScript) exporter, opset 17: the dynamo exporter needs onnxscript, which this stack does not
    ship.
    """
    import torch

    preprocessor = model.data_preprocessor
    model_mean = preprocessor.mean.detach().reshape(1, 3, 1, 1).float().cpu()
    model_std = preprocessor.std.detach().reshape(1, 3, 1, 1).float().cpu()
    imagenet_mean = torch.from_numpy(MEAN).reshape(1, 3, 1, 1)
    imagenet_std = torch.from_numpy(STD).reshape(1, 3, 1, 1)
    scale = (imagenet_std / model_std).to(next(model.parameters()).device)
    shift = ((imagenet_mean - model_mean) / model_std).to(scale.device)

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> Any:
            out = self.inner.head(self.inner.extract_feat(x * scale + shift))
            return (out[0], out[1]) if isinstance(out, tuple) else out

    if hasattr(model.head, "input_size"):
        w, h = (int(v) for v in model.head.input_size)
    else:
        w, h = (int(v) for v in model.cfg.spinetrack.input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        dummy = torch.zeros(1, 3, h, w, device=next(model.parameters()).device)
        heatmap = not isinstance(_Wrapper(model)(dummy), tuple)
        names = ["heatmaps"] if heatmap else ["simcc_x", "simcc_y"]
        torch.onnx.export(
            _Wrapper(model), (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=names,
            dynamic_axes={"input": {0: "batch"}, **{name: {0: "batch"} for name in names}},
        )
    finally:
        model.train(was_training)
    crop = str((getattr(model, "test_cfg", None) or {}).get("crop", "box"))
    if crop != "box":  # the crops the model was trained on travel with the file
        import onnx

        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, {CROP_KEY: crop})
        onnx.save(graph, str(path))
    return path
