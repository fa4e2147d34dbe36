"""The one place COCO keypoint dicts are built: images, annotations, results, datasets.

Export, evaluation, pseudo-label scoring, validation and the reference renderer all write COCO;
building the dicts here keeps the details pycocotools/xtcocotools depend on in one spot:
visibility flags are ints, `num_keypoints` counts the labelled points, `area` defaults to the box,
`iscrowd` is 0, one `person` category with the 37-point skeleton.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from schemas.keypoint_array import KeypointArray
from schemas.keypoints import NUM_KEYPOINTS, coco_category

PERSON = 1

Keypoints = KeypointArray | Sequence[float] | ArrayLike


def flat_keypoints(keypoints: Keypoints, decimals: int | None = None) -> list[float]:
    """COCO's flat (x, y, v) list with int flags, from a KeypointArray, a flat list or a (K, 3) array.

    Any number of keypoints (evaluation scores partitions of the 37 on their own).
    """
    if isinstance(keypoints, KeypointArray):
        return keypoints.to_flat(decimals)
    if isinstance(keypoints, list | tuple) and keypoints and len(keypoints) % 3 == 0 and isinstance(
        keypoints[0], float | int
    ):  # a flat list of numbers (the store's): no trip through numpy
        values = [float(v) for v in keypoints]
        out_flat: list[Any] = values[:]
        if decimals is not None:
            out_flat[0::3] = [round(x, decimals) for x in values[0::3]]
            out_flat[1::3] = [round(y, decimals) for y in values[1::3]]
        out_flat[2::3] = [int(v) for v in values[2::3]]
        return out_flat
    arr = np.asarray(keypoints, dtype=np.float64).reshape(-1)
    if arr.size % 3:
        raise ValueError(f"keypoints must be (x, y, v) triplets, got {arr.size} numbers")
    out: list[Any] = []
    for x, y, v in arr.reshape(-1, 3).tolist():
        if decimals is not None:
            x, y = round(x, decimals), round(y, decimals)
        out += [x, y, int(v)]
    return out


def _round(values: Iterable[float], decimals: int | None) -> list[float]:
    return [float(v) if decimals is None else round(float(v), decimals) for v in values]


def round_like_python(values: ArrayLike, decimals: int) -> np.ndarray:
    """`round(v, decimals)` of every value, for a whole array at once.

    numpy rounds the scaled product (`rint(v * 10**d) / 10**d`), Python the exact decimal value:
    they agree except where the product lands next to a tie (or is not finite, or too large to
    hold an integer exactly); those few values are redone with Python's own `round`.
    """
    given = np.asarray(values, dtype=np.float64)
    array = given.reshape(-1)  # flat (a copy where it must be): the fix-ups below index it
    scale = 10.0 ** decimals
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = array * scale
        out = np.rint(scaled) / scale
        distance_to_tie = np.abs(scaled - np.floor(scaled) - 0.5)
        sure = (np.abs(scaled) < 2.0 ** 52) & (distance_to_tie > 4 * np.spacing(np.abs(scaled) + 1))
    doubtful = np.flatnonzero(~sure)
    if len(doubtful):
        out[doubtful] = [round(v, decimals) for v in array[doubtful].tolist()]
    return out.reshape(given.shape)


def coco_annotation(
    ann_id: int,
    image_id: int,
    keypoints: Keypoints,
    bbox: Sequence[float],
    *,
    area: float | None = None,
    decimals: int | None = None,
    category_id: int = PERSON,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ground-truth annotation; `extra` adds project fields (e.g. `spinetrack`, `actor`)."""
    kps = flat_keypoints(keypoints, decimals)
    box = _round(bbox, decimals)
    if len(box) != 4:
        raise ValueError(f"bbox must be 4 numbers [x, y, w, h], got {len(box)}")
    value = float(area) if area is not None else box[2] * box[3]
    return annotation_from_parts(ann_id, image_id, kps, sum(1 for v in kps[2::3] if v > 0), box,
                                 value if decimals is None else round(value, decimals),
                                 category_id=category_id, extra=extra)


def annotation_from_parts(
    ann_id: int,
    image_id: int,
    keypoints: Any,
    num_keypoints: int,
    bbox: list[float],
    area: float,
    *,
    category_id: int = PERSON,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The annotation dict of `coco_annotation` from parts already flat and rounded (the bulk
    path, `pipeline.export.label_annotations`, computes them for many labels at once)."""
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "keypoints": keypoints,
        "num_keypoints": num_keypoints,
        "bbox": bbox,
        "area": area,
        "iscrowd": 0,
        **(extra or {}),
    }


def coco_result(
    image_id: int, keypoints: Keypoints, score: float, *, category_id: int = PERSON, all_present: bool = False
) -> dict[str, Any]:
    """A detection result (COCO results format). `all_present` marks every keypoint v=1: COCOeval
    drops a result whose flags are all 0, and predictions are scored by position only."""
    kps = flat_keypoints(keypoints)
    if all_present:
        kps[2::3] = [1] * (len(kps) // 3)
    return {"image_id": int(image_id), "category_id": int(category_id), "keypoints": kps,
            "score": float(score)}


def coco_image(
    image_id: int, file_name: str, width: int | None, height: int | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An image entry."""
    return {"id": int(image_id), "file_name": file_name, "width": width, "height": height, **(extra or {})}


def coco_dataset(
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    *,
    info: Mapping[str, Any] | None = None,
    categories: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A COCO keypoint dataset; the category defaults to SpineTrack's 37-point `person`."""
    return {
        "info": dict(info or {"description": "SpineTrack", "keypoints": NUM_KEYPOINTS}),
        "images": [dict(i) for i in images],
        "annotations": [dict(a) for a in annotations],
        "categories": [dict(c) for c in categories] if categories is not None else [coco_category()],
    }
