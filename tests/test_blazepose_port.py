"""The PyTorch port of BlazePose's landmark network against the real TFLite interpreter's outputs.

The reference outputs (tests/fixtures/blazepose/, made by scripts/make_blazepose_reference.py with
ai-edge-litert 2.3.0 in a separate venv) are on the project's own crops: three frames of the reference
renderer and a deterministic pattern; two real COCO photos are compared too when ../shared/data/
real_people is there (the fixture holds only their path, crop box and outputs). Tolerances: landmarks
within 0.01 px, heatmaps and segmentation logits within 1e-3 of their largest magnitude (the stored
heatmaps are float16: half of that is storage rounding). Two deliberately broken copies (the uneven
TF padding flipped to top/left, one kernel transposed) must fail the same comparison.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.model import blazepose_port as bp
from pipeline.model.blazepose_port import (
    BlazePoseLandmarkNet,
    LandmarkOutputs,
    TFConv2d,
    file_sha256,
    landmark_model_path,
    load_landmark_net,
    state_dict_sha256,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "blazepose"
REAL_PEOPLE = REPO.parent / "shared" / "data" / "real_people"
LANDMARK_TOL_PX = 0.01
RELATIVE_TOL = 1e-3


def _reference_script() -> Any:
    """scripts/make_blazepose_reference.py (its crop rule for the real photos)."""
    spec = importlib.util.spec_from_file_location("make_blazepose_reference",
                                                  REPO / "scripts" / "make_blazepose_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


META = json.loads((FIXTURES / "cases.json").read_text())
REF = dict(np.load(FIXTURES / "reference.npz"))
CASES = META["cases"]
OWN = [i for i, c in enumerate(CASES) if c["kind"] == "png"]
REAL = [i for i, c in enumerate(CASES) if c["kind"] == "real"]


def _to_input(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)


def _own_inputs() -> torch.Tensor:
    return torch.stack([_to_input(np.asarray(Image.open(FIXTURES / CASES[i]["file"]).convert("RGB")))
                        for i in OWN])


def _errors(out: LandmarkOutputs, rows: list[int]) -> dict[str, float]:
    """Worst error over the cases `rows` of the fixture, per output."""
    n = len(rows)
    heat = out.heatmaps.permute(0, 2, 3, 1).numpy()[..., META["heatmap_channels"]]
    ref_heat = REF["heatmaps"][rows].astype(np.float32)
    heat_scale = np.abs(ref_heat).reshape(n, -1).max(axis=1)
    errors = {
        "landmarks_px": float(np.abs(out.landmarks.reshape(n, -1).numpy() - REF["landmarks"][rows]).max()),
        "heatmaps_rel": float((np.abs(heat - ref_heat).reshape(n, -1).max(axis=1) / heat_scale).max()),
        "pose_flag": float(np.abs(out.pose_flag[:, 0].numpy() - REF["pose_flag"][rows]).max()),
        "world": float(np.abs(out.world.reshape(n, -1).numpy() - REF["world"][rows]).max()),
    }
    if out.segmentation is not None:
        step = META["segmentation_step"]
        seg = out.segmentation[:, 0, step // 2::step, step // 2::step].numpy()
        ref_seg = REF["segmentation"][rows]
        seg_scale = np.abs(ref_seg).reshape(n, -1).max(axis=1)
        seg_err = np.abs(seg - ref_seg).reshape(n, -1).max(axis=1)
        errors["segmentation_rel"] = float((seg_err / seg_scale).max())
    return errors


def _failures(errors: dict[str, float]) -> list[str]:
    limits = {"landmarks_px": LANDMARK_TOL_PX, "heatmaps_rel": RELATIVE_TOL, "pose_flag": 1e-4,
              "world": 1e-3, "segmentation_rel": RELATIVE_TOL}
    return [f"{k} {v:.3g} > {limits[k]:g}" for k, v in errors.items() if not v <= limits[k]]


@pytest.fixture(scope="module")
def net() -> BlazePoseLandmarkNet:
    torch.manual_seed(0)
    return load_landmark_net(segmentation=True)


@pytest.fixture(scope="module")
def own_inputs() -> torch.Tensor:
    return _own_inputs()


def _run(model: BlazePoseLandmarkNet, x: torch.Tensor) -> LandmarkOutputs:
    with torch.no_grad():
        return model(x)


def test_fixture_is_from_this_model_file() -> None:
    assert META["model_sha256"] == file_sha256(landmark_model_path())
    assert len(OWN) == 4


def test_parity_on_project_crops(net: BlazePoseLandmarkNet, own_inputs: torch.Tensor) -> None:
    errors = _errors(_run(net, own_inputs), OWN)
    assert not _failures(errors), errors


def test_parity_on_real_photos(net: BlazePoseLandmarkNet) -> None:
    if not REAL_PEOPLE.is_dir():
        pytest.skip(f"{REAL_PEOPLE} not present (the real-photo parity cases read their images from it)")
    script = _reference_script()
    crops = []
    for i in REAL:
        case = CASES[i]
        image = REAL_PEOPLE / case["path"]
        if not image.is_file():
            pytest.skip(f"{image} not present")
        pixels = script.real_crop(np.asarray(Image.open(image).convert("RGB")), tuple(case["crop"]))
        if hashlib.sha256(pixels.tobytes()).hexdigest() != case["crop_sha256"]:
            pytest.skip(f"{image} decodes differently from the reference's crop (other image or decoder)")
        crops.append(_to_input(pixels))
    errors = _errors(_run(net, torch.stack(crops)), REAL)
    assert not _failures(errors), errors


def _without_segmentation(model: BlazePoseLandmarkNet) -> BlazePoseLandmarkNet:
    broken = copy.deepcopy(model)
    broken.segmentation = None
    return broken


def test_flipped_padding_rule_fails_parity(net: BlazePoseLandmarkNet, own_inputs: torch.Tensor) -> None:
    """PyTorch-style symmetric thinking (extra pixel top/left) instead of TF's bottom/right."""
    broken = _without_segmentation(net)
    flipped = 0
    for module in broken.modules():
        if isinstance(module, TFConv2d) and module.explicit_pad is not None:
            left, right, top, bottom = module.explicit_pad
            module.explicit_pad = (right, left, bottom, top)
            flipped += 1
    assert flipped == 2  # the two stride-2 depthwise convs of the regression branch (8->4, 4->2)
    failures = _failures(_errors(_run(broken, own_inputs[:2]), OWN[:2]))
    assert any(f.startswith("landmarks_px") for f in failures), failures


def test_transposed_kernel_fails_parity(net: BlazePoseLandmarkNet, own_inputs: torch.Tensor) -> None:
    """A 3x3 kernel read as HW instead of WH (one missed axis of the NHWC -> NCHW layout change)."""
    broken = _without_segmentation(net)
    with torch.no_grad():
        stem = broken.encoder.stem.conv
        stem.weight.copy_(stem.weight.transpose(2, 3).clone())
    failures = _failures(_errors(_run(broken, own_inputs[:2]), OWN[:2]))
    assert any(f.startswith("landmarks_px") for f in failures), failures
    assert any(f.startswith("heatmaps_rel") for f in failures), failures


def test_public_interface(net: BlazePoseLandmarkNet, own_inputs: torch.Tensor) -> None:
    plain = load_landmark_net()
    assert plain.segmentation is None
    x = own_inputs[:2]
    with torch.no_grad():
        out = plain(x)
        decoded, trunk = plain.features(x)
    assert out.segmentation is None
    assert out.landmarks.shape == (2, 39, 5) and out.pose_flag.shape == (2, 1)
    assert out.heatmaps.shape == (2, 39, 64, 64) and out.world.shape == (2, 39, 3)
    assert decoded.shape == (2, 48, 64, 64) and trunk.shape == (2, 288, 2, 2)
    assert isinstance(plain.heatmap_conv, torch.nn.Conv2d)
    assert (plain.heatmap_conv.in_channels, plain.heatmap_conv.out_channels) == (48, 39)
    assert plain.heatmap_conv.kernel_size == (1, 1)
    torch.testing.assert_close(plain.heatmap_conv(decoded), out.heatmaps)
    torch.testing.assert_close(plain.landmark_conv(trunk).reshape(2, 39, 5), out.landmarks)
    torch.testing.assert_close(plain.world_conv(trunk).reshape(2, 39, 3), out.world)
    torch.testing.assert_close(torch.sigmoid(plain.pose_flag_conv(trunk)).reshape(2, 1), out.pose_flag)
    # Parameter counts measured in STACK.md: the whole network, and the backbone without old heads.
    assert sum(p.numel() for p in net.parameters()) == 3_169_489
    heads = (plain.heatmap_conv, plain.landmark_conv, plain.world_conv, plain.pose_flag_conv)
    assert sum(p.numel() for p in plain.parameters()) - sum(
        p.numel() for h in heads for p in h.parameters()) == 2_804_840
    # Hashes: stable across conversions, and provenance of the source file.
    assert state_dict_sha256(plain) == state_dict_sha256(load_landmark_net())
    assert state_dict_sha256(plain) != state_dict_sha256(net)
    assert plain.source_sha256 == file_sha256(landmark_model_path())
    assert plain.source_ops["heatmap_conv"] == 233 and plain.source_ops["landmark_conv"] == 321


def test_gradients_reach_the_first_conv() -> None:
    model = load_landmark_net().train()
    decoded, trunk = model.features(torch.rand(1, 3, 256, 256))
    (decoded.square().mean() + trunk.square().mean()).backward()
    grad = model.encoder.stem.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_missing_mediapipe_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pose_landmark_full\.tflite"):
        landmark_model_path()
