"""The PyTorch port of BlazePose's person detector against the real TFLite interpreter's outputs.

Reference outputs (tests/fixtures/blazepose/detector/, scripts/make_blazepose_reference.py, ai-edge-litert
2.3.0 in a separate venv) on two letterboxed frames of the reference renderer and a pattern, plus one
COCO photo when ../shared/data/real_people is there. Regressors (224-px units) within 0.01 px, score
logits within 1e-3. Then the decoding: anchors, weighted NMS, letterbox removal and the ROI.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.model.blazepose_detector import (
    NUM_ANCHORS,
    BlazePoseDetectorNet,
    DetectorOutputs,
    Letterbox,
    PersonDetection,
    TFDepthToSpace,
    decode_detections,
    decode_regressors,
    detect_people,
    detection_roi,
    detections_to_image,
    detector_anchors,
    detector_model_path,
    letterbox,
    load_detector_net,
)
from pipeline.model.blazepose_port import file_sha256, state_dict_sha256

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "blazepose" / "detector"
REAL_PEOPLE = REPO.parent / "shared" / "data" / "real_people"
META = json.loads((FIXTURES / "cases.json").read_text())
REF = dict(np.load(FIXTURES / "reference.npz"))
HIPS = json.loads((FIXTURES / "hips.json").read_text())
CASES = META["cases"]
OWN = [i for i, c in enumerate(CASES) if c["kind"] == "png"]
REAL = [i for i, c in enumerate(CASES) if c["kind"] == "real"]
REGRESSOR_TOL_PX = 0.01
SCORE_TOL = 1e-3


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("make_blazepose_reference",
                                                  REPO / "scripts" / "make_blazepose_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _to_input(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def _errors(out: DetectorOutputs, rows: list[int]) -> dict[str, float]:
    return {
        "regressors_px": float(np.abs(out.regressors.numpy() - REF["regressors"][rows]).max()),
        "score_logits": float(np.abs(out.scores[..., 0].numpy() - REF["scores"][rows]).max()),
    }


def _failures(errors: dict[str, float]) -> list[str]:
    limits = {"regressors_px": REGRESSOR_TOL_PX, "score_logits": SCORE_TOL}
    return [f"{k} {v:.3g} > {limits[k]:g}" for k, v in errors.items() if not v <= limits[k]]


@pytest.fixture(scope="module")
def net() -> BlazePoseDetectorNet:
    return load_detector_net()


@pytest.fixture(scope="module")
def own_inputs() -> torch.Tensor:
    return torch.stack([_to_input(np.asarray(Image.open(FIXTURES / CASES[i]["file"]).convert("RGB")))
                        for i in OWN])


def _run(model: BlazePoseDetectorNet, x: torch.Tensor) -> DetectorOutputs:
    with torch.no_grad():
        return model(x)


def test_fixture_is_from_this_model_file(net: BlazePoseDetectorNet) -> None:
    assert META["model_sha256"] == file_sha256(detector_model_path()) == net.source_sha256
    assert sum(p.numel() for p in net.parameters()) == 2_965_314  # as measured in STACK.md
    assert state_dict_sha256(net) == state_dict_sha256(load_detector_net())


def test_parity_on_project_inputs(net: BlazePoseDetectorNet, own_inputs: torch.Tensor) -> None:
    out = _run(net, own_inputs)
    assert out.regressors.shape == (len(OWN), NUM_ANCHORS, 12)
    assert out.scores.shape == (len(OWN), NUM_ANCHORS, 1)
    errors = _errors(out, OWN)
    assert not _failures(errors), errors


def test_parity_on_a_real_photo(net: BlazePoseDetectorNet) -> None:
    if not REAL_PEOPLE.is_dir():
        pytest.skip(f"{REAL_PEOPLE} not present (the real-photo parity case reads its image from it)")
    script = _script()
    inputs = []
    for i in REAL:
        case = CASES[i]
        image = REAL_PEOPLE / case["path"]
        if not image.is_file():
            pytest.skip(f"{image} not present")
        pixels = script.real_crop(np.asarray(Image.open(image).convert("RGB")), tuple(case["crop"]), 224)
        if hashlib.sha256(pixels.tobytes()).hexdigest() != case["crop_sha256"]:
            pytest.skip(f"{image} decodes differently from the reference's input (other image or decoder)")
        inputs.append(_to_input(pixels))
    errors = _errors(_run(net, torch.stack(inputs)), REAL)
    assert not _failures(errors), errors


def test_depth_to_space_channel_order() -> None:
    """TF's DEPTH_TO_SPACE puts channel (i * b + j) * C + c at block offset (i, j) of channel c."""
    n, c_out, b, h, w = 1, 3, 2, 2, 2
    x = torch.arange(n * c_out * b * b * h * w, dtype=torch.float32).reshape(n, c_out * b * b, h, w)
    expected = torch.empty(n, c_out, h * b, w * b)
    for i in range(b):
        for j in range(b):
            for c in range(c_out):
                expected[:, c, i::b, j::b] = x[:, (i * b + j) * c_out + c]
    assert torch.equal(TFDepthToSpace(b)(x), expected)
    assert not torch.equal(torch.nn.functional.pixel_shuffle(x, b), expected)


class _PixelShuffle(torch.nn.Module):
    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_shuffle(x, self.block)


def test_pixel_shuffle_instead_of_depth_to_space_fails_parity(
        net: BlazePoseDetectorNet, own_inputs: torch.Tensor) -> None:
    broken = copy.deepcopy(net)
    for head in (broken.head28, broken.head14, broken.head7):
        head.to_space = _PixelShuffle(head.to_space.block)  # type: ignore[assignment]
    failures = _failures(_errors(_run(broken, own_inputs[:2]), OWN[:2]))
    assert any(f.startswith("regressors_px") for f in failures), failures


def test_anchors() -> None:
    anchors = detector_anchors()
    assert anchors.shape == (NUM_ANCHORS, 2)
    # 28x28 cells x 2, then 14x14 x 2, then 7x7 x 6, row-major, cell centres.
    torch.testing.assert_close(anchors[0], torch.tensor([0.5 / 28, 0.5 / 28]))
    torch.testing.assert_close(anchors[1], anchors[0])
    torch.testing.assert_close(anchors[2], torch.tensor([1.5 / 28, 0.5 / 28]))
    torch.testing.assert_close(anchors[1568], torch.tensor([0.5 / 14, 0.5 / 14]))
    torch.testing.assert_close(anchors[1960], torch.tensor([0.5 / 7, 0.5 / 7]))
    torch.testing.assert_close(anchors[1965], anchors[1960])
    torch.testing.assert_close(anchors[-1], torch.tensor([6.5 / 7, 6.5 / 7]))
    raw = torch.zeros(NUM_ANCHORS, 12)
    raw[:, 2:4] = 22.4
    decoded = decode_regressors(raw)
    torch.testing.assert_close(decoded[:, 0:2], anchors)
    torch.testing.assert_close(decoded[:, 2:4], torch.full((NUM_ANCHORS, 2), 0.1))
    torch.testing.assert_close(decoded[:, 10:12], anchors)


def test_weighted_nms() -> None:
    raw = torch.zeros(NUM_ANCHORS, 12)
    scores = torch.full((NUM_ANCHORS,), -10.0)
    anchors = detector_anchors()
    # Two overlapping candidates on neighbouring 28x28 cells and a separate one far away.
    for index, logit in ((300, 3.0), (302, 1.0), (1000, 2.0)):
        scores[index] = logit
        raw[index, 2:4] = 50.0  # 50 px boxes
    dets = decode_detections(raw, scores)
    w1, w2, w3 = (1 / (1 + math.exp(-v)) for v in (3.0, 1.0, 2.0))
    assert [d.score for d in dets] == pytest.approx([w1, w3])
    expected_x = (w1 * anchors[300, 0] + w2 * anchors[302, 0]) / (w1 + w2)
    assert dets[0].keypoints[0][0] == pytest.approx(float(expected_x), abs=1e-6)
    (alone,) = decode_detections(raw, scores, min_score=0.9)  # the threshold applies before the NMS
    assert alone.keypoints[0][0] == pytest.approx(float(anchors[300, 0]), abs=1e-6)


def test_decoding_finds_the_rendered_person(net: BlazePoseDetectorNet, own_inputs: torch.Tensor) -> None:
    out = _run(net, own_inputs)
    for row, i in enumerate(OWN):
        case = CASES[i]
        dets = decode_detections(out.regressors[row], out.scores[row])
        if case["name"] == "pattern":
            assert dets == []
            continue
        assert len(dets) == 1 and dets[0].score > 0.9
        hip_x, hip_y = (v * 224 for v in dets[0].keypoints[0])
        true_x, true_y = HIPS[case["file"]]
        assert math.hypot(hip_x - true_x, hip_y - true_y) < 8.0  # px of 224
        roi = detection_roi(dets[0])
        assert abs(roi.rotation) < 0.3  # standing upright
        assert 0.5 < roi.side < 1.5  # a whole-body square in the 640x512 frame (normalised units)


def test_detect_people_on_a_photo(net: BlazePoseDetectorNet) -> None:
    image_path = REAL_PEOPLE / "coco" / "000000000785.jpg"
    if not image_path.is_file():
        pytest.skip(f"{image_path} not present")
    image = np.asarray(Image.open(image_path).convert("RGB"))
    dets = detect_people(net, image)
    assert dets and dets[0].score > 0.8
    coco = json.loads((REAL_PEOPLE / "coco" / "test_coco.json").read_text())
    ann = next(a for a in coco["annotations"] if a["image_id"] == 785)
    kps = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
    hip = (kps[11, :2] + kps[12, :2]) / 2
    assert math.hypot(dets[0].keypoints[0][0] - hip[0], dets[0].keypoints[0][1] - hip[1]) < 25.0
    height = ann["bbox"][3]
    roi = detection_roi(dets[0])
    assert abs(roi.x - hip[0]) < 25.0 and 0.8 * height < roi.side < 2.0 * height


def test_letterbox_round_trip() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, :100] = 255
    x, box = letterbox(image)
    assert x.shape == (3, 224, 224) and box == Letterbox(200, 100, pad_x=0.0, pad_y=56 / 224)
    assert float(x[0, 0, 0]) == -1.0 and float(x[0, 112, 10]) == 1.0  # black band, white half
    assert box.to_image(0.5, 0.5) == pytest.approx((100.0, 50.0))
    assert box.to_image(0.0, 56 / 224) == pytest.approx((0.0, 0.0))
    raw = PersonDetection(0.9, (0.0, 56 / 224, 1.0, 168 / 224), ((0.5, 0.5),) * 4)
    (det,) = detections_to_image([raw], box)
    assert det.box == pytest.approx((0.0, 0.0, 200.0, 100.0))
    assert det.keypoints[3] == pytest.approx((100.0, 50.0))
