"""Keypoints in store pixels <-> Label Studio results in percent of the image size.

A task may show a crop of its image (`view.View`, view.py): results are then in percent of the
crop, and the crop's integer offset is added back on the way in.

Label Studio stores x, y as percent of `original_width` / `original_height`. Converting back rounds to
1/1000 px (`PIXEL_DECIMALS`): any pixel value with at most three decimals survives the round trip
exactly, on any image size (333 x 217 included); finer digits are below any annotator's precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from annotation.labelstudio.config import IMAGE, OCCLUDED, PERSON, VISIBILITY, keypoint_controls
from annotation.labelstudio.view import View, frame_of, from_view, to_view
from schemas.keypoint_array import KeypointArray
from schemas.keypoints import INDEX, NAMES, NUM_KEYPOINTS

PIXEL_DECIMALS = 3
#: A point's drawn size, percent of the shown image's width (Label Studio draws radius = this share of
#: the canvas): about 4 px on a crop the canvas shows 350 px wide; it says nothing about the position.
POINT_WIDTH = 1.2
PERSON_REGION_ID = "person"
_CONTROLS = keypoint_controls()


def to_percent(pixels: float, size: int) -> float:
    return float(pixels) * 100.0 / float(size)


def to_pixels(percent: float, size: int) -> float:
    return round(float(percent) * float(size) / 100.0, PIXEL_DECIMALS)


def region_id(index: int) -> str:
    """Stable region id of a pre-annotated keypoint (annotator-added points get random ids)."""
    return f"kp{index:02d}"


def to_result(
    keypoints: Sequence[float], bbox: Sequence[float] | None, width: int, height: int,
    *, given: Sequence[int] = (), view: View | None = None,
) -> list[dict[str, Any]]:
    """Store keypoints (37 x (x, y, v), pixels of the width x height image) and box -> a Label
    Studio result list, on the `view` (a crop of the image, view.py) when one is given.

    `given`: points a person placed already (an imported COCO person's body): their regions are
    `readonly`, shown to place the rest around, not to be redone (the pull keeps them as stored)."""
    locked = set(given)
    if bbox is not None:  # a box past the image edge (a truncated person) would come back refused
        bbox = clip_box(bbox, width, height)
    keypoints, bbox = to_view(keypoints, bbox, view)
    if view is not None:
        width, height = view.width, view.height
    result: list[dict[str, Any]] = []
    if bbox is not None and bbox[2] > 0 and bbox[3] > 0:
        result.append(
            {
                "id": PERSON_REGION_ID,
                "from_name": PERSON,
                "to_name": IMAGE,
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "x": to_percent(bbox[0], width),
                    "y": to_percent(bbox[1], height),
                    "width": to_percent(bbox[2], width),
                    "height": to_percent(bbox[3], height),
                    "rotation": 0,
                    "rectanglelabels": [PERSON],
                },
            }
        )
    for idx in range(NUM_KEYPOINTS):
        x, y, v = keypoints[3 * idx : 3 * idx + 3]
        if v <= 0:
            continue
        rid = region_id(idx)
        point = {"x": to_percent(x, width), "y": to_percent(y, height), "width": POINT_WIDTH}
        lock = {"readonly": True} if idx in locked else {}
        result.append(
            {
                "id": rid,
                "from_name": _CONTROLS[NAMES[idx]],
                "to_name": IMAGE,
                "type": "keypointlabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {**point, "keypointlabels": [NAMES[idx]]},
                **lock,
            }
        )
        if v < 2:
            result.append(
                {
                    "id": rid,
                    "from_name": VISIBILITY,
                    "to_name": IMAGE,
                    "type": "choices",
                    "value": {**point, "choices": [OCCLUDED]},
                    **lock,
                }
            )
    return result


def prediction(
    keypoints: Sequence[float], bbox: Sequence[float] | None, width: int, height: int, *,
    model_version: str, score: float | None = None, scores: Sequence[float] | None = None,
    given: Sequence[int] = (), view: View | None = None,
) -> dict[str, Any]:
    """A Label Studio prediction: the result `to_result` builds, the model version, the instance
    score and, given 37 per-point `scores`, each keypoint region's own `score` (Label Studio shows
    it beside the region). The one builder for pushed pre-annotations and the ML backend's answers."""
    result = to_result(keypoints, bbox, width, height, given=given, view=view)
    if scores is not None and len(scores) == NUM_KEYPOINTS:
        by_id = {region_id(i): float(scores[i]) for i in range(NUM_KEYPOINTS)}
        for item in result:
            if item["type"] == "keypointlabels" and item["id"] in by_id:
                item["score"] = by_id[item["id"]]
    out: dict[str, Any] = {"model_version": model_version, "result": result}
    if score is not None:
        out["score"] = float(score)
    return out


@dataclass
class ParsedResult:
    """An annotation result back in store terms."""

    keypoints: list[float]
    bbox: list[float] | None
    notes: dict[str, Any] = field(default_factory=dict)


def _pixels(value: Mapping[str, Any], frame: View | None, width: int, height: int) -> tuple[float, float]:
    """A region's x, y (percent of the image it was drawn on) -> pixels of the full image."""
    if frame is None:
        return to_pixels(value["x"], width), to_pixels(value["y"], height)
    return from_view(to_pixels(value["x"], frame.width), to_pixels(value["y"], frame.height), frame)


def from_result(result: Sequence[Mapping[str, Any]], width: int, height: int,
                view: View | None = None) -> ParsedResult:
    """A Label Studio result list -> 37 x (x, y, v) pixels of the width x height image and the box.

    `view`: the crop the task showed (view.py); each region is read in the frame it was drawn on
    (`frame_of`: the crop, or the full image when the region says so).

    Every placed point is labelled: v=1 when its region carries the "occluded" choice, else v=2.
    Keypoints with no point (deleted by the annotator, or never placed) are v=0 at (0, 0).
    A keypoint placed twice keeps the last point and is noted in `notes["duplicates"]`.
    """
    occluded = {
        item.get("id")
        for item in result
        if item.get("type") == "choices"
        and item.get("from_name") == VISIBILITY
        and OCCLUDED in (item.get("value") or {}).get("choices", [])
    }
    keypoints = [0.0] * (NUM_KEYPOINTS * 3)
    seen: set[int] = set()
    duplicates: list[str] = []
    unknown: list[str] = []
    bbox: list[float] | None = None
    for item in result:
        value = item.get("value") or {}
        kind = item.get("type")
        frame = frame_of(item, view, width, height)
        if kind == "keypointlabels":
            for name in value.get("keypointlabels", []):
                idx = INDEX.get(name)
                if idx is None:
                    unknown.append(str(name))
                    continue
                if idx in seen:
                    duplicates.append(name)
                seen.add(idx)
                keypoints[3 * idx], keypoints[3 * idx + 1] = _pixels(value, frame, width, height)
                keypoints[3 * idx + 2] = 1.0 if item.get("id") in occluded else 2.0
        elif kind == "rectanglelabels" and item.get("from_name") == PERSON:
            x, y = _pixels(value, frame, width, height)
            size = (frame.width, frame.height) if frame is not None else (width, height)
            bbox = [x, y, to_pixels(value["width"], size[0]), to_pixels(value["height"], size[1])]
    notes: dict[str, Any] = {}
    if duplicates:
        notes["duplicates"] = sorted(set(duplicates))
    if unknown:
        notes["unknown_labels"] = sorted(set(unknown))
    return ParsedResult(keypoints=keypoints, bbox=bbox, notes=notes)


#: Label Studio coordinates are percents of the image; a point dragged onto the border may land a
#: hair outside, anything further is not a place in the image.
PERCENT_RANGE = (-1.0, 101.0)


def result_problem(result: Any, view: View | None = None,
                   size: tuple[int, int] | None = None) -> tuple[str, str] | None:
    """The first thing in an annotation's result that `from_result` cannot turn into a label:
    (field, what is wrong), or None. Hostile or broken results are refused whole, never guessed.
    With a `view` (the crop the task showed) and the image's `size`, a point on the crop is checked
    for being in the IMAGE: the crop's percent range is the image's, moved and scaled."""
    if not isinstance(result, list):
        return "result", f"must be a list, got {type(result).__name__}"
    for n, item in enumerate(result):
        where = f"result[{n}]"
        if not isinstance(item, Mapping):
            return where, "must be an object"
        value = item.get("value")
        kind = item.get("type")
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue
        if not isinstance(value, Mapping):
            return f"{where}.value", "must be an object"
        names = ("x", "y") if kind == "keypointlabels" else ("x", "y", "width", "height")
        frame = frame_of(item, view, *size) if view is not None and size is not None else None
        for name in names:
            problem = _percent_problem(value.get(name), name, _range(frame, size, name))
            if problem:
                return f"{where}.value.{name}", problem
        labels = value.get(kind)
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            return f"{where}.value.{kind}", "must be a list of label names"
    return None


def _range(frame: View | None, size: tuple[int, int] | None, name: str) -> tuple[float, float]:
    """The percents of the shown crop that stay within PERCENT_RANGE of the image."""
    if frame is None or size is None or name not in ("x", "y"):
        return PERCENT_RANGE
    offset, part, whole = (frame.x, frame.width, size[0]) if name == "x" else (frame.y, frame.height, size[1])
    low, high = ((p * whole / 100.0 - offset) * 100.0 / part for p in PERCENT_RANGE)
    return low, high


def _percent_problem(value: Any, name: str, bounds: tuple[float, float] = PERCENT_RANGE) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number (percent of the image), got {value!r}"[:120]
    low, high = bounds
    if not math.isfinite(value) or not low <= value <= high:
        return f"{value!r} is not a percent of the image"
    if name in ("width", "height") and value <= 0:
        return f"must be > 0, got {value!r}"
    return None


def clip_box(bbox: Sequence[float], width: int, height: int) -> list[float]:
    """x, y, w, h cut to the image: what a person can draw, and what the pull accepts."""
    x0, y0 = min(max(float(bbox[0]), 0.0), width), min(max(float(bbox[1]), 0.0), height)
    x1 = min(max(float(bbox[0]) + float(bbox[2]), 0.0), width)
    y1 = min(max(float(bbox[1]) + float(bbox[3]), 0.0), height)
    return [x0, y0, x1 - x0, y1 - y0]


def keypoints_bbox(keypoints: Sequence[float], width: int, height: int, margin: float = 0.1) -> list[float]:
    """A box around the labelled points (with a margin), clipped to the image: used when none was drawn."""
    kps = KeypointArray.from_flat(keypoints)
    points = kps.xy[kps.labelled]
    if not len(points):
        return [0.0, 0.0, 0.0, 0.0]
    (x0, y0), (x1, y1) = points.min(axis=0).tolist(), points.max(axis=0).tolist()
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = max(0.0, x0 - mx), max(0.0, y0 - my)
    x1, y1 = min(float(width), x1 + mx), min(float(height), y1 + my)
    return [x0, y0, x1 - x0, y1 - y0]
