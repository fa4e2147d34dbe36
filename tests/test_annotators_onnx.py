"""The ONNX path (RTMPose/SpinePose format) against the project's own torch inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.annotators.onnx import OnnxPoseAnnotator, export_onnx
from pipeline.model.predict import predict, untrained_model
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS


def _coco(real_people: Path) -> tuple[list[Path], list[np.ndarray]]:
    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    files, boxes = [], []
    for img in raw["images"]:
        files.append(real_people / "coco" / img["file_name"])
        boxes.append(np.array([a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]]))
    return files, boxes


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = untrained_model("tiny", seed=3)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


@pytest.mark.parametrize("flip_test", [False, True])
def test_onnx_annotator_agrees_with_torch_predict(exported, real_people: Path, flip_test: bool) -> None:  # type: ignore[no-untyped-def]
    model, path = exported
    files, boxes = _coco(real_people)
    annotator = OnnxPoseAnnotator(path, flip_test=flip_test)
    assert annotator.num_keypoints == NUM_KEYPOINTS and annotator.split_ratio == 2.0
    assert annotator.input_size == (96, 128)
    poses = annotator.predict_many(files, boxes)
    reference = predict(model, files, boxes, flip_test=flip_test)
    assert len(poses) == len(reference) == 14
    worst = 0.0
    for pose, ref in zip(poses, reference, strict=True):
        assert (pose.image_index, pose.box_index) == (ref.image_index, ref.box_index)
        worst = max(worst, float(np.abs(pose.keypoints - ref.keypoints).max()))
        assert pose.confidence == pytest.approx(ref.confidence, abs=5e-3)  # float32 vs float64 softmax
        assert pose.covered.all() and set(pose.origin) == {"onnx:tiny"}
    assert worst < 0.5, f"ONNX and torch keypoints differ by up to {worst:.3f} px"


def test_identity_is_the_file_hash(exported) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store.store import file_sha256

    _model, path = exported
    annotator = OnnxPoseAnnotator(path)
    assert annotator.identity.sha256 == file_sha256(path)
    assert annotator.identity.version == f"onnx:tiny@{file_sha256(path)[:12]}"


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.onnx"
    with pytest.raises(InputError, match="not found"):
        OnnxPoseAnnotator(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load"):
        OnnxPoseAnnotator(junk)
