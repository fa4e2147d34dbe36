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
    """BlazePose's own rows, decoded from plain 1.25x square crops with flip test: body AP 0.4875
    on the 12 COCO-sample people (the from-scratch tiny model: 0.000). Inference only, so the
    number moves only with float order (last digit); 0.45 leaves the margin of one lost person."""
    from pipeline.annotators.coco_eval import score_on_coco
    from pipeline.annotators.registered import in_memory_annotator

    annotator = in_memory_annotator(untrained, "blaze37-untrained")
    body = score_on_coco(annotator, real_people / "coco" / "test_coco.json", real_people / "coco")["body_AP"]
    print("untrained blaze37 body AP on the COCO sample:", body)
    assert body is not None and body >= 0.45


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
    """The exported student through the project's `onnx:` path: every covered point within 0.5 px
    of the torch model's on the COCO sample people (flip test on both sides)."""
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
    ours = exported.predict_many(paths, box_lists)
    reference = in_memory_annotator(untrained, "blaze37-untrained").predict_many(paths, box_lists)
    gaps = [float(np.abs(a.keypoints - b.keypoints).max()) for a, b in zip(ours, reference, strict=True)]
    print("ONNX vs torch, max px per person:", [round(g, 4) for g in gaps])
    assert len(gaps) >= 10 and max(gaps) <= 0.5
