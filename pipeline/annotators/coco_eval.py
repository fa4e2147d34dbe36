"""An annotator scored on a real COCO-17 (or Halpe26) keypoint file with its ground-truth boxes.

What `spinetrack demo` prints before and after its rounds (body AP on the COCO sample images):
the file's keypoints map into SpineTrack's first 17 (or 26) points by index, the annotator runs on
every annotated person's box (`predict_coco`), and xtcocotools scores each partition that has
labels. Uncovered points (v=0) count as misses, as in bench/annotators.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.annotators.base import Annotator
from pipeline.coco_writer import coco_annotation, coco_dataset
from schemas.keypoints import NUM_KEYPOINTS, PARTITIONS


def spinetrack_ground_truth(coco_file: str | Path, slots: Sequence[int] = tuple(range(17))) -> dict[str, Any]:
    """The file as SpineTrack ground truth: keypoint slots `slots` kept at their index, the rest v=0;
    crowd and keypoint-less persons dropped (they say nothing about keypoints)."""
    data = json.loads(Path(coco_file).read_text())
    annotations = []
    for ann in data["annotations"]:
        src = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps = np.zeros((NUM_KEYPOINTS, 3))
        kps[list(slots)] = src[list(slots)]
        kps[kps[:, 2] > 0, 2] = 2.0
        labelled = int((kps[:, 2] > 0).sum())
        if ann.get("iscrowd") or labelled == 0:
            continue
        box = [float(v) for v in ann["bbox"]]
        annotations.append(coco_annotation(ann["id"], ann["image_id"], kps, box,
                                           area=float(ann.get("area") or box[2] * box[3])))
    keep = {a["image_id"] for a in annotations}
    return coco_dataset([img for img in data["images"] if img["id"] in keep], annotations)


def score_on_coco(annotator: Annotator, coco_file: str | Path, image_dir: str | Path, *,
                  slots: Sequence[int] = tuple(range(17)),
                  partitions: Sequence[str] = ("body",)) -> dict[str, float | None]:
    """`{partition}_AP` of `annotator` on the file's annotated persons (ground-truth boxes)."""
    import tempfile

    from pipeline.annotators.coco_predict import predict_coco
    from pipeline.evaluate import evaluate_keypoints

    gt = spinetrack_ground_truth(coco_file, slots)
    with tempfile.TemporaryDirectory() as tmp:  # predict exactly the persons that are scored
        boxes_file = Path(tmp) / "boxes.json"
        boxes_file.write_text(json.dumps(gt))
        results = predict_coco(annotator, boxes_file, image_dir)
    metrics = evaluate_keypoints(gt, results, {p: PARTITIONS[p] for p in partitions})
    return {f"{name}_AP": (round(m.AP, 4) if m.num_gt > 0 else None) for name, m in metrics.items()}
