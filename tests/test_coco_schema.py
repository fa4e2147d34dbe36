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


def test_the_one_coco_writer_gives_what_pycocotools_and_the_schema_read(tmp_path: Path) -> None:
    import numpy as np
    from pycocotools.coco import COCO

    from pipeline.coco_writer import coco_annotation, coco_dataset, coco_image, coco_result
    from schemas.coco import CocoDataset, dump_coco
    from schemas.keypoint_array import KeypointArray

    kps = np.zeros((37, 3))
    kps[:, 0], kps[:, 1] = np.arange(37) + 0.12345, 2.0
    kps[::2, 2] = 2.0
    ann = coco_annotation(7, 3, KeypointArray(kps), [1.0, 2.0, 10.0, 20.0], decimals=2, extra={"actor": 1})
    assert ann["num_keypoints"] == 19 and ann["area"] == 200.0 and ann["iscrowd"] == 0
    assert ann["keypoints"][:3] == [0.12, 2.0, 2] and type(ann["keypoints"][5]) is int
    assert coco_annotation(7, 3, kps.ravel().tolist(), [1, 2, 10, 20], decimals=2,
                           extra={"actor": 1}) == ann  # flat list in, same dict out
    data = coco_dataset([coco_image(3, "a.png", 64, 48)], [ann])
    CocoDataset.model_validate(data)
    coco = COCO(str(dump_coco(data, tmp_path / "a.json")))
    assert coco.loadAnns([7])[0]["actor"] == 1 and coco.loadCats([1])[0]["keypoints"][0] == "nose"
    result = coco_result(3, kps, 0.5, all_present=True)
    assert result["keypoints"][2::3] == [1] * 37 and result["score"] == 0.5
    with pytest.raises(ValueError, match="triplets"):
        coco_annotation(1, 1, [1.0, 2.0], [0, 0, 1, 1])
