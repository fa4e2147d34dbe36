"""Batched prediction agrees with mmpose's own `inference_topdown` and batches correctly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.model.predict import Prediction, load_image, predict, untrained_model
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return untrained_model("tiny", seed=1)


def _images(real_people: Path) -> tuple[list[Path], list[np.ndarray]]:
    import json

    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    files, boxes = [], []
    for img in raw["images"]:
        files.append(real_people / "coco" / img["file_name"])
        boxes.append(np.array([a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]]))
    return files, boxes


def _reference(model, image: Path, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    from mmpose.apis import inference_topdown

    results = inference_topdown(model, str(image), boxes, bbox_format="xywh")
    kps = np.stack([r.pred_instances.keypoints[0] for r in results])
    scores = np.stack([r.pred_instances.keypoint_scores[0] for r in results])
    return kps, scores


@pytest.mark.parametrize("flip_test", [False, True])
def test_matches_inference_topdown(tiny, real_people: Path, flip_test: bool) -> None:  # type: ignore[no-untyped-def]
    files, boxes = _images(real_people)
    tiny.test_cfg["flip_test"] = flip_test
    preds = predict(tiny, files, boxes, batch_size=5, flip_test=flip_test)
    assert len(preds) == sum(len(b) for b in boxes) == 14
    for i, (file, image_boxes) in enumerate(zip(files, boxes, strict=True)):
        ref_kps, ref_scores = _reference(tiny, file, image_boxes)
        mine = [p for p in preds if p.image_index == i]
        assert [p.box_index for p in mine] == list(range(len(image_boxes)))
        kps = np.stack([p.keypoints for p in mine])
        assert np.abs(kps - ref_kps).max() < 1.0  # pixels
        assert np.stack([p.scores for p in mine]) == pytest.approx(ref_scores, abs=1e-3)


def test_flip_outputs_and_features(tiny, real_people: Path) -> None:  # type: ignore[no-untyped-def]
    files, boxes = _images(real_people)
    plain = predict(tiny, files[:1], boxes[:1], flip_test=False)[0]
    flipped = predict(tiny, files[:1], boxes[:1], flip_test=True)[0]
    assert plain.flip_keypoints is None
    assert flipped.flip_keypoints is not None and flipped.flip_keypoints.shape == (NUM_KEYPOINTS, 2)
    # the plain half of the flip test is the prediction without flip test
    assert flipped.plain_keypoints == pytest.approx(plain.keypoints, abs=1e-4)
    assert not np.allclose(flipped.flip_keypoints, flipped.plain_keypoints)
    assert flipped.features.ndim == 1 and flipped.features.size > 0
    assert flipped.confidence.shape == (NUM_KEYPOINTS,)
    assert ((flipped.confidence >= 0) & (flipped.confidence <= 1)).all()
    triplets = flipped.coco_keypoints()
    assert len(triplets) == NUM_KEYPOINTS * 3 and triplets[2::3] == [2.0] * NUM_KEYPOINTS


def test_batch_size_and_arrays_do_not_change_results(tiny, real_people: Path) -> None:  # type: ignore[no-untyped-def]
    files, boxes = _images(real_people)
    one = predict(tiny, files, boxes, batch_size=1, flip_test=True)
    arrays = [np.asarray(cv2.imread(str(f)), dtype=np.uint8) for f in files]
    many = predict(tiny, arrays, boxes, batch_size=32, flip_test=True)
    for a, b in zip(one, many, strict=True):
        assert isinstance(a, Prediction)
        assert (a.image_index, a.box_index) == (b.image_index, b.box_index)
        assert a.keypoints == pytest.approx(b.keypoints, abs=1e-3)
        assert a.features == pytest.approx(b.features, abs=1e-4)


def test_images_without_boxes_and_bad_input(tiny, real_people: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files, boxes = _images(real_people)
    preds = predict(tiny, files[:2], [np.zeros((0, 4)), boxes[1]])
    assert {p.image_index for p in preds} == {1}
    with pytest.raises(ValueError, match="box lists"):
        predict(tiny, files[:2], boxes[:1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.jpg"):
        predict(tiny, [broken], [[[0, 0, 10, 10]]])
    assert load_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
