"""COCO export of the store's current labels.

The same labels always give the same bytes (ids from the store, sorted keys, no timestamps), so a
release can be reproduced and checksummed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.coco_json import number_rows
from pipeline.coco_writer import (
    annotation_from_parts,
    coco_annotation,
    coco_dataset,
    coco_image,
    round_like_python,
)
from pipeline.store import Label, Store
from schemas.coco import dump_coco
from schemas.keypoints import NUM_KEYPOINTS

#: Decimals of every coordinate, box and area a COCO file of labels holds.
DECIMALS = 3
#: Which of the 111 flat keypoint numbers are visibility flags (ints in COCO).
_FLAG_COLUMNS = np.arange(NUM_KEYPOINTS * 3) % 3 == 2


def _extra(label: Label) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "revision_id": label.revision_id,
        "source": label.source,
        "model_version": label.model_version,
        "annotator": label.annotator,
        "round": label.round,
    }
    if label.point_sources is not None:  # several sources: who placed each point; else all `source`
        extra["point_sources"] = label.point_sources
    return {"spinetrack": extra}


def label_annotation(label: Label) -> dict[str, Any]:
    """A COCO annotation for one label; ids are the store's instance ids."""
    return coco_annotation(label.instance_id, label.image_id, label.keypoints, label.bbox, area=label.area,
                           decimals=DECIMALS, extra=_extra(label))


class _Bulk:
    """Keypoints, flags and boxes of many labels rounded at once (numpy), as `label_annotation`
    rounds them one by one; None when some label does not fit the (N, 111) / (N, 4) arrays."""

    def __init__(self, labels: Sequence[Label]) -> None:
        width = NUM_KEYPOINTS * 3
        self.ok = all(len(lab.keypoints) == width and len(lab.bbox) == 4 for lab in labels)
        if not self.ok or not labels:
            self.ok = self.ok and bool(labels)
            return
        kps = np.array([lab.keypoints for lab in labels], dtype=np.float64)
        flags = kps[:, _FLAG_COLUMNS]
        if not (np.isfinite(flags).all() and (np.abs(flags) < 2.0 ** 62).all()):
            self.ok = False  # int() of these raises, or needs big ints: the one-by-one path
            return
        self.flags = np.trunc(flags).astype(np.int64)  # int(v)
        self.values = kps
        self.values[:, ~_FLAG_COLUMNS] = round_like_python(kps[:, ~_FLAG_COLUMNS], DECIMALS)
        self.values[:, _FLAG_COLUMNS] = self.flags
        self.num_keypoints = (self.flags > 0).sum(axis=1).tolist()
        boxes = round_like_python([lab.bbox for lab in labels], DECIMALS).tolist()
        self.boxes: list[list[float]] = boxes
        self.areas = [round(float(lab.area) if lab.area is not None else box[2] * box[3], DECIMALS)
                      for lab, box in zip(labels, boxes, strict=True)]

    def keypoints(self, n: int) -> list[Any]:
        row: list[Any] = self.values[n].tolist()
        row[2::3] = self.flags[n].tolist()
        return row

    def annotation(self, label: Label, n: int, keypoints: Any) -> dict[str, Any]:
        return annotation_from_parts(label.instance_id, label.image_id, keypoints, self.num_keypoints[n],
                                     self.boxes[n], self.areas[n], extra=_extra(label))


def label_annotations(labels: Sequence[Label]) -> list[dict[str, Any]]:
    """`label_annotation` of every label, the rounding done for all of them at once."""
    bulk = _Bulk(labels)
    if not bulk.ok:
        return [label_annotation(lab) for lab in labels]
    return [bulk.annotation(lab, n, bulk.keypoints(n)) for n, lab in enumerate(labels)]


#: JSON as `schemas.coco.dump_coco` writes it (sorted keys, no spaces); one encoder, made once.
encode_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
#: A placeholder no COCO value contains (a control character, so JSON escapes it).
SLOT = "\x00spinetrack-slot\x00"
_SLOT_TEXT = encode_json(SLOT)
#: Between the items of one `encode_each` call.
_SEPARATOR = "\x00spinetrack-separator\x00"
_SEPARATOR_TEXT = "," + encode_json(_SEPARATOR) + ","


def encode_each(values: Sequence[Any]) -> list[str]:
    """`[encode_json(v) for v in values]`, in one encoder call: the items are encoded as one list
    with a placeholder between them, then cut apart there (each call alone costs microseconds)."""
    if not values:
        return []
    interleaved: list[Any] = [_SEPARATOR] * (2 * len(values) - 1)
    interleaved[0::2] = values
    pieces = encode_json(interleaved)[1:-1].split(_SEPARATOR_TEXT)
    if len(pieces) != len(values):  # a value held the placeholder itself: one by one
        return [encode_json(v) for v in values]
    return pieces


def encoded_annotations(labels: Sequence[Label]) -> list[str]:
    """`label_annotation` of every label as JSON text (the bytes `dump_coco` writes for it).

    The keypoints, most of the text, are formatted for all labels at once (`number_rows`); the
    rest of each annotation is encoded around a placeholder that their text then replaces."""
    bulk = _Bulk(labels)
    if not bulk.ok:
        return [encode_json(label_annotation(lab)) for lab in labels]
    texts = number_rows(bulk.values, _FLAG_COLUMNS)
    rest = encode_each([bulk.annotation(lab, n, SLOT) for n, lab in enumerate(labels)])
    return [head.replace(_SLOT_TEXT, text if text is not None else encode_json(bulk.keypoints(n)), 1)
            for n, (head, text) in enumerate(zip(rest, texts, strict=True))]


def image_entry(label: Label, image_root: Path | None, *, file_name: str | None = None) -> dict[str, Any]:
    """A COCO image entry; `file_name` is relative to `image_root` when given, else absolute
    (or exactly `file_name`, when the caller computed it)."""
    if file_name is None:
        path = Path(label.image_path)
        file_name = os.path.relpath(path, image_root) if image_root is not None else str(path)
    return coco_image(label.image_id, file_name, label.width, label.height, extra={
        "spinetrack": {
            "source": label.image_source,
            "subset": label.subset,
            "group": label.group_key,
            "frame_index": label.frame_index,
        },
    })


def coco_dict(labels: Sequence[Label], *, image_root: Path | None = None,
              info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the COCO dictionary for `labels` (one person category, 37 keypoints)."""
    images: dict[int, dict[str, Any]] = {}
    ordered = sorted(labels, key=lambda lab: (lab.image_id, lab.instance_id))
    for label in ordered:
        images.setdefault(label.image_id, image_entry(label, image_root))
    annotations = label_annotations(ordered)
    return coco_dataset(list(images.values()), annotations,
                        info=info or {"description": "SpineTrack export", "keypoints": NUM_KEYPOINTS})


def export_coco(
    store: Store,
    out_path: str | Path,
    *,
    image_source: str | None = None,
    subset: str | None = None,
    revision_sources: Sequence[str] | None = None,
    labels: Sequence[Label] | None = None,
    image_root: str | Path | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the current labels (or the given ones) as a pycocotools-loadable COCO file."""
    if labels is None:
        labels = store.current_labels(
            image_source=image_source, subset=subset, revision_sources=revision_sources
        )
    root = Path(image_root).resolve() if image_root is not None else None
    return dump_coco(coco_dict(labels, image_root=root, info=info), out_path)
