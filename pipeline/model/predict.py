"""Batched top-down inference with flip test, giving what uncertainty and selection need.

`mmpose.apis.inference_topdown` runs one image per call and returns only the flip-averaged
keypoints. Pseudo-labelling thousands of crops needs crops from many images in one forward pass,
and the uncertainty needs the plain and the mirrored prediction separately plus backbone features
for diversity. This module builds the crops with the model's own test pipeline transforms
(GetBBoxCenterScale, TopdownAffine, so crops are identical to mmpose's), normalises them with the
model's data preprocessor and runs backbone and head in batches.

Images given as arrays are BGR, as cv2 and mmpose read them; paths are read with cv2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

import pipeline.model  # noqa: F401  (installs the mmpose import shims before mmpose loads)
from pipeline.annotators.crop import read_image
from schemas.keypoints import NUM_KEYPOINTS, flip_permutation

ImageInput = NDArray[np.uint8] | str | Path

#: Side of BlazePose's region-of-interest crops (its landmark network's input).
ROI_SIZE = 256
#: People whose regions one detector call finds (batches run faster per person than one by one).
ROI_BATCH = 8

#: Test-pipeline steps replaced here: loading (done once per image) and packing (done per batch).
_SKIPPED_STEPS = ("LoadImage", "PackPoseInputs")


@dataclass
class Prediction:
    """One person's predicted pose, in image pixels.

    `keypoints`/`scores` are the final answer (the flip-averaged output when flip test is on, as
    mmpose computes it); `plain_keypoints` and `flip_keypoints` are the two halves of the flip test
    decoded separately, whose disagreement is an uncertainty signal. `features` is the
    global-average-pooled last backbone/neck feature map, for diversity-aware selection.
    """

    image_index: int
    box_index: int
    bbox: NDArray[np.float64]  # (4,) x, y, w, h
    keypoints: NDArray[np.float64]  # (37, 2)
    scores: NDArray[np.float64]  # (37,)
    plain_keypoints: NDArray[np.float64]  # (37, 2)
    plain_scores: NDArray[np.float64]  # (37,)
    flip_keypoints: NDArray[np.float64] | None = None  # (37, 2)
    flip_scores: NDArray[np.float64] | None = None  # (37,)
    confidence: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # (37,) in [0, 1]
    features: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))

    def coco_keypoints(self) -> list[float]:
        """Flat (x, y, v) triplets with v = 2 for every point (a prediction labels all 37)."""
        out = np.concatenate([self.keypoints, np.full((NUM_KEYPOINTS, 1), 2.0)], axis=1)
        return [float(v) for v in out.ravel()]

    @property
    def score(self) -> float:
        """Instance score: the mean keypoint score (boxes are given, so no box score)."""
        return float(np.mean(self.scores))


def load_image(image: ImageInput) -> NDArray[np.uint8]:
    """An image as a BGR uint8 array; arrays pass through (grey gains 3 channels)."""
    return read_image(image)


def _crop_pipeline(cfg: Any) -> Any:
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmpose"))
    steps = [s for s in cfg.test_dataloader.dataset.pipeline if s["type"] not in _SKIPPED_STEPS]
    return Compose(steps)


@dataclass
class _Crop:
    image_index: int
    box_index: int
    bbox_xywh: NDArray[np.float64]
    image: NDArray[np.uint8]
    to_image: NDArray[np.float64]  # (2, 3) crop pixels -> image pixels


def _box_crop(pipeline: Any, img: NDArray[np.uint8], box: NDArray[np.float64]) -> tuple[Any, Any]:
    """The model's own test-pipeline crop of the box (mmpose's GetBBoxCenterScale + TopdownAffine)."""
    x, y, w, h = box
    out = pipeline({"img": img, "img_shape": img.shape[:2], "bbox_score": np.ones(1, dtype=np.float32),
                    "bbox": np.array([[x, y, x + w, y + h]], dtype=np.float32)})
    size = np.asarray(out["input_size"], dtype=np.float64)
    scale = np.asarray(out["input_scale"], dtype=np.float64) / size
    corner = np.asarray(out["input_center"], dtype=np.float64) - 0.5 * scale * size
    return out["img"], np.array([[scale[0], 0.0, corner[0]], [0.0, scale[1], corner[1]]])


def _roi_crops(people: list[tuple[int, int, NDArray[np.uint8], NDArray[np.float64]]], pipeline: Any,
               size: int) -> Iterator[_Crop]:
    """BlazePose's rotated regions of interest for a batch of people (pipeline.model.roi), the box
    crop where its detector finds nobody in the box."""
    from pipeline.model.roi import region_crops

    regions = region_crops([(img, box) for _, _, img, box in people], size)
    for (i, j, img, box), region in zip(people, regions, strict=True):
        pixels, to_image = region if region is not None else _box_crop(pipeline, img, box)
        yield _Crop(i, j, box.copy(), pixels, to_image)


def _crops(
    pipeline: Any, images: Sequence[ImageInput], boxes: Sequence[Any], crop: str = "box"
) -> Iterator[_Crop]:
    if len(images) != len(boxes):
        raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
    waiting: list[tuple[int, int, NDArray[np.uint8], NDArray[np.float64]]] = []
    for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
        arr = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
        if len(arr) == 0:
            continue
        img = load_image(image)
        for j, box in enumerate(arr):
            if crop != "roi":
                pixels, to_image = _box_crop(pipeline, img, box)
                yield _Crop(i, j, box.copy(), pixels, to_image)
                continue
            waiting.append((i, j, img, box))
            if len(waiting) == ROI_BATCH:
                yield from _roi_crops(waiting, pipeline, ROI_SIZE)
                waiting = []
    yield from _roi_crops(waiting, pipeline, ROI_SIZE)


def _batches(items: Iterator[_Crop], size: int) -> Iterator[list[_Crop]]:
    batch: list[_Crop] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _flip_back(head: nn.Module, outputs: Any, test_cfg: dict[str, Any]) -> Any:
    """Map the head's output on a mirrored crop back to the plain crop (mmpose's own helpers)."""
    from mmpose.models.utils.tta import flip_heatmaps, flip_vectors

    # K = 17 / 26 (official COCO / Halpe26 models): their flip partners are the first K of ours
    count = int((outputs[0] if isinstance(outputs, tuple) else outputs).shape[1])
    indices = list(flip_permutation())[:count]
    if isinstance(outputs, tuple) and len(outputs) == 2:  # SimCC: (x, y) 1-D distributions
        return flip_vectors(outputs[0], outputs[1], flip_indices=indices)
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 4:  # heatmaps
        return flip_heatmaps(
            outputs,
            flip_mode=test_cfg.get("flip_mode", "heatmap"),
            flip_indices=indices,
            shift_heatmap=test_cfg.get("shift_heatmap", False),
        )
    raise TypeError(f"flip test: unsupported head output of {type(head).__name__}: {type(outputs)}")


def _average(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple((x + y) * 0.5 for x, y in zip(a, b, strict=True))
    return (a + b) * 0.5


def _decode(
    head: nn.Module, outputs: Any, crops: list[_Crop]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Decode head outputs to image-space keypoints (N, K, 2) and scores (N, K)."""
    preds = head.decode(outputs)  # type: ignore[operator]
    kps = np.stack([np.asarray(p.keypoints, dtype=np.float64)[0, :, :2] for p in preds])
    scores = np.stack([np.asarray(p.keypoint_scores, dtype=np.float64)[0] for p in preds])
    for n, crop in enumerate(crops):
        kps[n] = kps[n] @ crop.to_image[:, :2].T + crop.to_image[:, 2]
    return kps, scores


def _confidence(head: nn.Module, outputs: Any) -> NDArray[np.float64]:
    """Per-keypoint confidence in [0, 1] from the head's raw output.

    SimCC: the probability mass within two target sigmas of the peak, under the same softmax
    (with the loss's beta) the model was trained to match; averaged over the x and y axes. A
    sharp, trained peak gives close to 1, a flat output about window / bins. Heatmaps: the
    peak value, which the Gaussian targets train towards 1, clipped to [0, 1].
    """
    if isinstance(outputs, tuple) and len(outputs) == 2:
        loss = getattr(head, "loss_module", None)
        beta = float(getattr(loss, "beta", 1.0)) if getattr(loss, "label_softmax", True) else 1.0
        sigmas = np.asarray(getattr(head.decoder, "sigma", (2.0, 2.0)), dtype=np.float64).reshape(-1)
        per_axis = []
        for axis, logits in enumerate(outputs):
            prob = torch.softmax(logits.float() * beta, dim=-1)
            peak = prob.argmax(dim=-1, keepdim=True)
            radius = int(np.ceil(2.0 * sigmas[min(axis, len(sigmas) - 1)]))
            bins = torch.arange(prob.shape[-1], device=prob.device)
            window = (bins - peak).abs() <= radius
            per_axis.append((prob * window).sum(dim=-1))
        return ((per_axis[0] + per_axis[1]) * 0.5).double().cpu().numpy()
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 4:
        peak = outputs.flatten(2).max(dim=-1).values
        return peak.clamp(0.0, 1.0).double().cpu().numpy()
    raise TypeError(f"confidence: unsupported head output {type(outputs)}")


#: inputs -> (head outputs, pooled last feature): torch, or onnxruntime (pipeline.model.onnx_runner)
Runner = Callable[[torch.Tensor], tuple[Any, torch.Tensor]]


def torch_runner(model: nn.Module) -> Runner:
    def run(inputs: torch.Tensor) -> tuple[Any, torch.Tensor]:
        feats = model.extract_feat(inputs)  # type: ignore[operator]
        return cast(nn.Module, model.head)(feats), feats[-1].mean(dim=(2, 3))
    return run


def onnx_runner(model: nn.Module) -> Runner:
    """The same outputs through onnxruntime (about twice as fast on CPU for blaze37)."""
    from pipeline.model.onnx_runner import pose_runner

    runner = pose_runner(model, input_size(model))

    def run(inputs: torch.Tensor) -> tuple[Any, torch.Tensor]:
        *outs, pooled = runner(inputs)
        return (tuple(outs) if len(outs) > 1 else outs[0]), pooled
    return run


def input_size(model: nn.Module) -> tuple[int, int]:
    """(w, h) of the model's input crops."""
    head_size = getattr(model.head, "input_size", None)
    size: Any = head_size if head_size is not None else model.cfg.spinetrack.input_size  # type: ignore[union-attr]
    w, h = (int(v) for v in size)
    return w, h


def _split(outputs: Any, n: int) -> tuple[Any, Any]:
    if isinstance(outputs, tuple):
        return tuple(o[:n] for o in outputs), tuple(o[n:] for o in outputs)
    return outputs[:n], outputs[n:]


@torch.no_grad()
def _run_batch(model: nn.Module, crops: list[_Crop], flip_test: bool, runner: Runner) -> list[Prediction]:
    from mmengine.model import ImgDataPreprocessor

    tensors = [torch.from_numpy(np.ascontiguousarray(c.image.transpose(2, 0, 1))) for c in crops]
    # The image part of PoseDataPreprocessor (normalise, BGR->RGB, stack, move to the model's
    # device); its pose part only annotates data samples, which this path does not build.
    batch = ImgDataPreprocessor.forward(model.data_preprocessor, {"inputs": tensors}, training=False)
    inputs = batch["inputs"]
    head = cast(nn.Module, model.head)
    test_cfg = dict(getattr(model, "test_cfg", None) or {})
    n = inputs.shape[0]
    both, pooled_both = runner(torch.cat([inputs, inputs.flip(-1)]) if flip_test else inputs)
    outputs, mirrored = _split(both, n)
    pooled = pooled_both[:n].float().cpu().numpy()

    plain_kps, plain_scores = _decode(head, outputs, crops)
    flip_kps = flip_scores = None
    final_kps, final_scores, final_outputs = plain_kps, plain_scores, outputs
    if flip_test:
        flipped = _flip_back(head, mirrored, test_cfg)
        flip_kps, flip_scores = _decode(head, flipped, crops)
        final_outputs = _average(outputs, flipped)
        final_kps, final_scores = _decode(head, final_outputs, crops)
    confidence = _confidence(head, final_outputs)

    return [
        Prediction(
            image_index=c.image_index,
            box_index=c.box_index,
            bbox=c.bbox_xywh,
            keypoints=final_kps[n],
            scores=final_scores[n],
            plain_keypoints=plain_kps[n],
            plain_scores=plain_scores[n],
            flip_keypoints=None if flip_kps is None else flip_kps[n],
            flip_scores=None if flip_scores is None else flip_scores[n],
            confidence=confidence[n],
            features=pooled[n],
        )
        for n, c in enumerate(crops)
    ]


def predict(
    model: nn.Module,
    images: Sequence[ImageInput],
    boxes: Sequence[Any],
    *,
    batch_size: int = 32,
    flip_test: bool = True,
    cfg: Any | None = None,
    runner: Runner | None = None,
) -> list[Prediction]:
    """Predict 37 keypoints for every box of every image.

    `boxes[i]` are the (K, 4) x, y, w, h boxes of `images[i]`. `model` is an mmpose top-down
    estimator; its config (`model.cfg`, or `cfg`) supplies the test pipeline. Predictions come
    back in input order (image, then box), with `image_index`/`box_index` set. `runner` runs the
    network (default: torch; `onnx_runner(model)` for onnxruntime). Crops are the model's box
    crops, or BlazePose's rotated regions of interest where its test_cfg says `crop="roi"`.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    config = cfg if cfg is not None else getattr(model, "cfg", None)
    if config is None:
        raise ValueError("the model has no .cfg; pass cfg= (the mmpose config it was built from)")
    pipeline = _crop_pipeline(config)
    was_training = model.training
    model.eval()
    try:
        out: list[Prediction] = []
        crop = str((getattr(model, "test_cfg", None) or {}).get("crop", "box"))
        run = runner or torch_runner(model)
        for batch in _batches(_crops(pipeline, images, boxes, crop), batch_size):
            out.extend(_run_batch(model, batch, flip_test, run))
        return out
    finally:
        model.train(was_training)


def untrained_model(config_name: str, *, seed: int = 0, device: str = "cpu") -> nn.Module:
    """A randomly initialised model of a named config, ready for `predict` and mmpose's
    `inference_topdown`: for plumbing tests and speed benchmarks."""
    import tempfile

    from pipeline.model.configs import SPECS, build_config
    from pipeline.model.registry import build_model

    torch.manual_seed(seed)
    model = build_model(build_config(config_name, work_dir=tempfile.gettempdir()), device=device)
    if SPECS[config_name].pretrained:  # its pretrained weights, as training starts from them
        model.init_weights()  # type: ignore[operator]  # mmengine BaseModule method
    model.eval()
    return model
