"""The fixed-expert cache: a person is seen by BlazePose once per image content and box, and a
cached pose is the computed pose bit for bit (so pseudo-labels do not depend on the cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.annotators import PersonPose, load_annotator
from pipeline.annotators.blazepose import blazepose_status
from pipeline.annotators.cache import CachedAnnotator, cache_path
from pipeline.store import Store

pytestmark = pytest.mark.skipif(not blazepose_status()["available"],
                                reason=str(blazepose_status().get("reason")))


def _sample(real_people: Path) -> tuple[list[Path], list[list[list[float]]]]:
    raw = json.loads((real_people / "coco" / "test_coco.json").read_text())
    images = raw["images"][:2]
    files = [real_people / "coco" / img["file_name"] for img in images]
    boxes = [[a["bbox"] for a in raw["annotations"] if a["image_id"] == img["id"]] for img in images]
    return files, boxes


def _same(a: PersonPose, b: PersonPose) -> None:
    assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.confidence, b.confidence)
    assert np.array_equal(a.covered, b.covered) and a.origin == b.origin
    assert np.array_equal(a.bbox, b.bbox) and a.detail == b.detail
    assert (a.image_index, a.box_index) == (b.image_index, b.box_index)


def test_cached_blazepose_equals_computed_and_runs_once(store: Store, real_people: Path) -> None:
    files, boxes = _sample(real_people)
    plain = load_annotator("blazepose", store, cache=False).predict_many(files, boxes)
    cached = load_annotator("blazepose", store)
    assert isinstance(cached, CachedAnnotator) and cache_path(store.home).is_file()
    first = cached.predict_many(files, boxes)
    assert (cached.hits, cached.misses) == (0, len(plain))
    # a new process's annotator (same identity and settings) finds them all in the file
    again = load_annotator("blazepose", store)
    second = again.predict_many(files, boxes)
    assert (again.hits, again.misses) == (len(plain), 0)
    assert again.stats["persons"] == 0  # BlazePose itself never ran
    for p, f, s in zip(plain, first, second, strict=True):
        _same(p, f)
        _same(p, s)


def test_other_pixels_boxes_or_settings_are_other_keys(store: Store, real_people: Path,
                                                       tmp_path: Path) -> None:
    files, boxes = _sample(real_people)
    warm = load_annotator("blazepose", store)
    warm.predict_many(files[:1], boxes[:1])

    moved = [[b[0] + 5.0, b[1], b[2], b[3]] for b in boxes[0]]
    ann = load_annotator("blazepose", store)
    ann.predict_many(files[:1], [moved])
    assert (ann.hits, ann.misses) == (0, len(moved))

    edited = tmp_path / "edited.jpg"  # same name elsewhere, other pixels
    image = cv2.imread(str(files[0]))
    cv2.imwrite(str(edited), 255 - image)
    ann = load_annotator("blazepose", store)
    ann.predict_many([edited], boxes[:1])
    assert ann.misses == len(boxes[0])

    copied = tmp_path / "copy.jpg"  # same pixels under another path: the same poses
    shutil.copy(files[0], copied)
    ann = load_annotator("blazepose", store)
    ann.predict_many([copied, image], [boxes[0], boxes[0]])  # a path and the decoded array
    assert ann.hits == len(boxes[0])  # the path hits; the array is other content (decoded bytes)

    no_retry = load_annotator("blazepose:retry=0", store)
    no_retry.predict_many(files[:1], boxes[:1])
    assert no_retry.misses == len(boxes[0])


def test_combined_annotator_with_cached_body_gives_the_same_poses(store: Store, real_people: Path) -> None:
    files, boxes = _sample(real_people)
    plain = load_annotator("combined", store, cache=False).predict_many(files, boxes)
    for _ in range(2):  # cold, then warm cache
        for p, c in zip(plain, load_annotator("combined", store).predict_many(files, boxes), strict=True):
            _same(p, c)
