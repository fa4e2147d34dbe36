"""COCO files are validated on load and errors name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.coco import load_coco
from schemas.errors import InputError


def _coco(keypoints: list[float]) -> dict[str, object]:
    return {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "annotations": [{"id": 7, "image_id": 1, "keypoints": keypoints, "bbox": [0, 0, 5, 5]}]}


def test_wrong_keypoint_count_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_coco([1.0, 2.0, 2] * 17)))
    with pytest.raises(InputError) as err:
        load_coco(path)
    assert err.value.path == str(path) and err.value.field == "annotations.0.keypoints"
    assert "expected 37 keypoints" in str(err.value)


def test_nan_and_bad_visibility_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.json"
    kps = [1.0, 2.0, 2] * 37
    kps[4] = float("nan")
    path.write_text(json.dumps(_coco(kps)))  # json writes NaN, which Python reads back
    with pytest.raises(InputError, match="non-finite"):
        load_coco(path)
    kps = [1.0, 2.0, 2] * 37
    kps[5] = 3
    path.write_text(json.dumps(_coco(kps)))
    with pytest.raises(InputError, match="visibility 3"):
        load_coco(path)


def test_unreadable_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "truncated.json"
    path.write_text('{"images": [')
    with pytest.raises(InputError, match="truncated.json: cannot read COCO JSON"):
        load_coco(path)


def test_valid_file_fills_num_keypoints_and_area(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    kps = [1.0, 2.0, 2] * 37
    kps[2] = 0
    path.write_text(json.dumps(_coco(kps)))
    ann = load_coco(path).annotations[0]
    assert ann.num_keypoints == 36 and ann.area == 25.0
