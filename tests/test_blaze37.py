"""blaze37, the default student: BlazePose's converted network with a 37-row heatmap head.

The loss terms are checked on hand-made maps; the model on real people (the COCO sample, ground-
truth boxes) before any training, where it must already know bodies; the training recipe in
tests/test_blaze37_training.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.model.blaze37 import (
    SHARED_ROWS,
    STRIDE,
    distillation_kl,
    heatmap_cross_entropy,
    soft_argmax,
    target_centre,
)
from schemas.keypoints import INDEX


def _gaussian(x: float, y: float, sigma: float = 2.0, size: int = 64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    return torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))


def test_cross_entropy_is_zero_exactly_at_the_target_and_ignores_unlabelled_points() -> None:
    target = _gaussian(20.0, 30.0)[None, None]
    exact = torch.log(target / target.sum())
    off = torch.log(_gaussian(24.0, 30.0)[None, None] / target.sum())
    weights = torch.ones(1, 1)
    assert heatmap_cross_entropy(exact, target, weights).item() == pytest.approx(0.0, abs=1e-6)  # float32
    assert heatmap_cross_entropy(off, target, weights).item() > 0.5
    assert heatmap_cross_entropy(off, target, torch.zeros(1, 1)).item() == 0.0


def test_soft_argmax_and_target_centre_are_in_input_pixels() -> None:
    target = _gaussian(20.0, 30.0)[None, None]
    assert target_centre(target)[0, 0].tolist() == pytest.approx([20.0 * STRIDE, 30.0 * STRIDE], abs=1e-6)
    sharp = torch.log(target) * 10  # a peaked softmax centred on the same cell
    assert soft_argmax(sharp)[0, 0].tolist() == pytest.approx([20.0 * STRIDE, 30.0 * STRIDE], abs=1e-3)


def test_distillation_is_zero_for_the_same_maps_and_grows_with_distance() -> None:
    a = torch.log(_gaussian(10.0, 10.0))[None, None]
    near = torch.log(_gaussian(11.0, 10.0))[None, None]
    far = torch.log(_gaussian(30.0, 10.0))[None, None]
    assert distillation_kl(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < distillation_kl(near, a).item() < distillation_kl(far, a).item()


def test_shared_rows_are_the_points_blazepose_has() -> None:
    names = {target for _, target in SHARED_ROWS}
    assert INDEX["nose"] in names and INDEX["left_big_toe"] in names
    assert all(INDEX[p] not in names for p in ("head", "neck", "hip", "left_small_toe"))
    assert len(SHARED_ROWS) == 21


@pytest.fixture(scope="module")
def untrained() -> torch.nn.Module:
    from pipeline.model.predict import untrained_model

    return untrained_model("blaze37")


def test_the_head_starts_from_blazepose_heatmap_rows(untrained: torch.nn.Module) -> None:
    backbone, head = untrained.backbone, untrained.head
    source = backbone.net.heatmap_conv.weight
    for blaze, ours in SHARED_ROWS:
        assert torch.equal(head.final_layer.weight[ours], source[blaze])
    new = [i for i in range(37) if i not in {t for _, t in SHARED_ROWS}]
    assert head.final_layer.weight[new].abs().max().item() < 0.01  # new rows start small


def test_outputs_are_heatmaps_that_peak_near_one_for_a_target_like_map(untrained: torch.nn.Module) -> None:
    head = untrained.head
    assert head.peak_scale == pytest.approx(2 * math.pi * 4.0)
    feats = (torch.zeros(1, 48, 64, 64),)
    out = head(feats)
    assert out.shape == (1, 37, 64, 64)
    assert out.flatten(2).sum(-1).allclose(torch.full((1, 37), head.peak_scale))


def test_untrained_student_already_knows_real_bodies(untrained: torch.nn.Module, real_people: Path) -> None:
    """BlazePose's own rows on its own rotated regions of interest, with flip test: body AP 0.5636
    on the 12 COCO-sample people (plain 1.25x box squares: 0.4875; the from-scratch tiny model:
    0.000). Inference only, so the number moves only with float order (last digit); 0.52 leaves the
    margin of about one lost person."""
    from pipeline.annotators.coco_eval import score_on_coco
    from pipeline.annotators.registered import in_memory_annotator

    annotator = in_memory_annotator(untrained, "blaze37-untrained")
    body = score_on_coco(annotator, real_people / "coco" / "test_coco.json", real_people / "coco")["body_AP"]
    print("untrained blaze37 body AP on the COCO sample:", body)
    assert body is not None and body >= 0.52


def test_the_default_student_is_blaze37_everywhere() -> None:
    """Rounds, `spinetrack train` and the library share one default (the CLI reads the same)."""
    import inspect

    from pipeline.active_learning.loop import RoundSettings
    from pipeline.model.configs import DEFAULT_CONFIG
    from pipeline.model.train import train

    assert DEFAULT_CONFIG == "blaze37"
    assert RoundSettings().config == DEFAULT_CONFIG
    assert inspect.signature(train).parameters["config"].default == DEFAULT_CONFIG
    from flows.model import train_command, train_model

    assert inspect.signature(train_model.fn).parameters["config"].default == DEFAULT_CONFIG
    assert inspect.signature(train_command).parameters["config"].default.default == DEFAULT_CONFIG


def test_onnx_export_answers_like_torch(untrained: torch.nn.Module, tmp_path: Path,
                                        real_people: Path) -> None:
    """The exported student through the project's `onnx:` path: every point with a peak within 0.5
    px of the torch model's on the COCO sample people (flip test on both sides; BlazePose's region
    crops on both sides: the file's metadata says so). The untrained new rows are flat (peak
    0.006): their maximum is noise, and float rounding alone moves it, so they are not compared."""
    import json

    import numpy as np

    from pipeline.annotators import load_annotator
    from pipeline.annotators.onnx import export_onnx
    from pipeline.annotators.registered import in_memory_annotator

    path = export_onnx(untrained, tmp_path / "blaze37.onnx")
    exported = load_annotator(f"onnx:{path},flip")
    data = json.loads((real_people / "coco" / "test_coco.json").read_text())
    files = {img["id"]: real_people / "coco" / img["file_name"] for img in data["images"]}
    boxes: dict[int, list[list[float]]] = {}
    for ann in data["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    paths = [files[i] for i in boxes]
    box_lists = [boxes[i] for i in boxes]
    assert exported.crop == "roi"
    ours = exported.predict_many(paths, box_lists)
    reference = in_memory_annotator(untrained, "blaze37-untrained").predict_many(paths, box_lists)
    gaps = [float(np.abs(a.keypoints - b.keypoints)[b.raw_scores > 0.1].max())
            for a, b in zip(ours, reference, strict=True)]
    print("ONNX vs torch, max px per person:", [round(g, 4) for g in gaps])
    assert len(gaps) >= 10 and max(gaps) <= 0.5


def _coco_sample(real_people: Path) -> tuple[list[Path], list[list[list[float]]]]:
    import json

    data = json.loads((real_people / "coco" / "test_coco.json").read_text())
    files = {img["id"]: real_people / "coco" / img["file_name"] for img in data["images"]}
    boxes: dict[int, list[list[float]]] = {}
    for ann in data["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    return [files[i] for i in boxes], [boxes[i] for i in boxes]


def test_onnxruntime_replays_the_student_like_torch(untrained: torch.nn.Module, real_people: Path) -> None:
    """Registered students run through onnxruntime on CPU (pipeline.model.onnx_runner): the same
    keypoints as torch within 0.01 px (measured: 1.3e-3 px at most), plain and flipped halves and
    pooled features alike."""
    import numpy as np

    from pipeline.annotators.registered import in_memory_annotator

    paths, boxes = _coco_sample(real_people)
    fast = in_memory_annotator(untrained, "blaze37", runtime="onnx").predict_many(paths, boxes)
    slow = in_memory_annotator(untrained, "blaze37", runtime="torch").predict_many(paths, boxes)
    assert len(fast) == len(slow) >= 10
    for a, b in zip(fast, slow, strict=True):
        assert np.abs(a.keypoints - b.keypoints).max() <= 0.01
        assert np.abs(a.flip_keypoints - b.flip_keypoints).max() <= 0.01
        assert np.abs(a.features - b.features).max() <= 1e-3


def test_batched_decoding_equals_mmpose(untrained: torch.nn.Module, real_people: Path) -> None:
    """pipeline.heatmap_decode against mmpose's own MSRAHeatmap decode on the network's heatmaps of
    real people: the same scores everywhere; the same keypoints within 0.05 input px (float64 here,
    float32 in mmpose) wherever mmpose's DARK step stays within two heatmap cells; beyond that
    (flat new rows, peak 0.006, where the step is ill-conditioned and lands up to 14 px away, and 5
    of 274 points of BlazePose's own rows, peak > 0.1) ours is clipped to two cells per axis."""
    import cv2
    import numpy as np
    from mmengine.model import ImgDataPreprocessor

    from pipeline.heatmap_decode import decode_heatmaps

    paths, boxes = _coco_sample(real_people)
    crops = []
    for path, image_boxes in zip(paths, boxes, strict=True):
        image = cv2.imread(str(path))
        for x, y, w, h in image_boxes:
            side = max(w, h) * 1.25
            x0, y0 = int(max(x + w / 2 - side / 2, 0)), int(max(y + h / 2 - side / 2, 0))
            crop = cv2.resize(image[y0:y0 + int(side), x0:x0 + int(side)], (256, 256))
            crops.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
    with torch.no_grad():
        inputs = ImgDataPreprocessor.forward(untrained.data_preprocessor, {"inputs": crops}, training=False)
        heatmaps = untrained.head(untrained.extract_feat(inputs["inputs"])).numpy()
    keypoints, scores = decode_heatmaps(heatmaps, (4.0, 4.0))
    flat = heatmaps.reshape(*heatmaps.shape[:2], -1)
    cells = np.stack([flat.argmax(-1) % 64, flat.argmax(-1) // 64], axis=-1).astype(np.float32) * 4.0
    kept = compared = 0
    for n in range(len(heatmaps)):
        reference, reference_scores = untrained.head.decoder.decode(heatmaps[n])
        assert np.allclose(reference_scores[0], scores[n])
        near = np.abs(reference[0] - cells[n]).max(axis=-1) < 7.5  # mmpose's step within two cells
        assert np.abs(reference[0] - keypoints[n])[near].max() <= 0.05
        peaked = scores[n] > 0.1  # BlazePose's own rows, where the step matters
        kept += int((~near & peaked).sum())
        compared += int(peaked.sum())
    print(f"mmpose's step leaves two cells for {kept} of {compared} peaked points")
    assert compared >= 200 and kept <= 0.05 * compared
    assert np.abs(keypoints - cells).max() <= 8.0  # never more than two cells from the maximum


def test_the_frozen_early_stages_are_computed_once_and_only_while_they_are_blazeposes() -> None:
    """blaze37 freezes the stem and the 64/32-pixel stages (most of the network's cost): at
    inference the body expert reuses the trainable copy's outputs of them, exactly what it would
    compute itself; once those stages differ from BlazePose's (a parent trained without freezing),
    nothing is shared."""
    from pipeline.model.predict import untrained_model

    model = untrained_model("blaze37")
    backbone = model.backbone
    assert backbone.freeze == "early"
    assert not any(p.requires_grad for p in backbone.net.encoder.stage64.parameters())
    assert all(p.requires_grad for p in backbone.net.encoder.stage16.parameters())
    x = torch.rand(2, 3, 256, 256)
    calls = []
    hook = backbone.expert.encoder.stage64.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        shared = backbone(x)
        assert calls == []  # the expert's own early stages never ran
        backbone._shares = False
        apart = backbone(x)
        assert calls == [1]
    for a, b in zip(shared, apart, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        backbone.net.encoder.stem.parameters().__next__().add_(0.01)  # as if trained
    backbone.eval()  # weights may change between inferences: checked again
    with torch.no_grad():
        moved = backbone(x)
    assert len(calls) == 2 and torch.equal(moved[0], apart[0])  # the expert is BlazePose's again
    hook.remove()
