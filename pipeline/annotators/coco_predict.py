"""COCO keypoint results from an annotator for the images and boxes of any COCO file (no store).

The input's `file_name`s are relative to the image folder; its boxes are the persons to label.
Each result: the input's image_id, 37 (x, y, v) triplets (v=0 where the annotator placed nothing
or the point is outside the image), the mean confidence of covered points as score, and the
per-point origin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.annotators.base import Annotator
from schemas.errors import InputError


def read_boxes(coco_file: Path, image_dir: Path) -> tuple[list[dict[str, Any]], dict[int, list[list[float]]]]:
    try:
        data = json.loads(coco_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(coco_file, f"cannot read COCO JSON: {exc}") from exc
    boxes: dict[int, list[list[float]]] = {}
    for n, ann in enumerate(data.get("annotations", [])):
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise InputError(coco_file, "bbox must be [x, y, w, h] with w, h > 0",
                             field=f"annotations[{n}].bbox")
        boxes.setdefault(int(ann["image_id"]), []).append([float(v) for v in box])
    images = []
    for n, img in enumerate(data.get("images", [])):
        if int(img.get("id", -1)) not in boxes:
            continue
        path = image_dir / str(img.get("file_name", ""))
        if not path.is_file():
            raise InputError(coco_file, f"image file not found: {path}", field=f"images[{n}].file_name")
        images.append({**img, "path": path})
    return images, boxes


def predict_coco(annotator: Annotator, coco_file: str | Path, image_dir: str | Path) -> list[dict[str, Any]]:
    """COCO results for every box of `coco_file`."""
    images, boxes = read_boxes(Path(coco_file), Path(image_dir))
    poses = annotator.predict_many([img["path"] for img in images], [boxes[int(img["id"])] for img in images])
    results = []
    for pose in poses:
        img = images[pose.image_index]
        width, height = img.get("width"), img.get("height")
        results.append({
            "image_id": img["id"], "category_id": 1,
            "keypoints": [round(v, 2) for v in pose.coco_keypoints(width, height)],
            "score": round(pose.score, 5), "bbox": [float(v) for v in pose.bbox],
            "origin": pose.origin,
        })
    return results
